"""Convert the downloaded SMPL model pickles to plain ``.npz`` files, once: ``python -m lucid_app smpl-convert``.

Why
---
The official SMPL files (https://smpl.is.tue.mpg.de) are Python-2 pickles, and ``pickle.load`` runs whatever
code a pickle names. The CLI and the app therefore never unpickle at run time (``body.py`` reads ``.npz`` with
``allow_pickle=False``); this module reads each ``.pkl`` exactly once, with :class:`SmplUnpickler`, whose
``find_class`` hands out only the numpy array machinery and harmless stand-ins, and refuses every other global.

What a SMPL pickle holds
------------------------
A dict of numpy arrays, plus, depending on the release:

- ``J_regressor`` as a ``scipy.sparse`` CSC matrix (every release): read into :class:`_SparseStandIn` from its
  ``data`` / ``indices`` / ``indptr`` / ``_shape`` state and made dense here — scipy is never imported.
- ``shapedirs`` (and other fields) as chumpy ``Ch`` objects (SMPL 1.0): read into :class:`_ChumpyStandIn`, whose
  state holds the array under ``x`` — chumpy is never imported (it does not install on current Python anyway).

Steps of :func:`convert_smpl_folder`: (1) find ``SMPL_<GENDER>.pkl`` (or the official ``basicmodel_*_lbs_*.pkl``
names) in SRC, SRC/smpl, SRC/models or SRC/smpl/models; (2) read each with the restricted unpickler; (3) keep
the :data:`~lucid_app.avatar.body.SMPL_KEYS` as plain numeric arrays and check SMPL's sizes; (4) only when every
file converted, write ``DST/SMPL_<GENDER>.npz`` atomically (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import pickle
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from lucid_app.avatar.body import (
    GENDERS,
    SMPL_KEYS,
    SMPL_NUM_JOINTS,
    SMPL_NUM_VERTICES,
    SMPL_URL,
    AvatarError,
    Gender,
    check_smpl_arrays,
    model_file_name,
)
from lucid_app.io.files import atomic_path

logger = logging.getLogger(__name__)

SEARCH_DIRS = (".", "smpl", "models", "smpl/models")
# The official download's names: basicmodel_{f,m,neutral}_lbs_10_207_0_v1.1.0.pkl (v1.0.0: "basicModel_...").
OFFICIAL_NAME = re.compile(r"basic_?model_(f|m|neutral)_lbs_.*\.pkl", re.IGNORECASE)
OFFICIAL_GENDER: dict[str, Gender] = {"f": "female", "m": "male", "neutral": "neutral"}
MAX_NESTING = 8


class UnsafePickleError(AvatarError):
    """A pickle named something other than arrays: it was refused before anything in it ran."""


# ---------------------------------------------------------------- the restricted unpickler


class _StandIn:
    """A placeholder the unpickler builds instead of a foreign class: it only remembers its pickled state."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _StandIn:  # noqa: ARG003 - the pickled constructor args
        instance = super().__new__(cls)
        instance.state = {}
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002 - called by REDUCE with pickled args
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state of a {type(self).__name__}: {type(state).__name__}")
        self.state = state


class _ChumpyStandIn(_StandIn):
    """A chumpy ``Ch`` (SMPL 1.0): a stored array lives in its state's ``x``; other nodes are expressions."""


class _SparseStandIn(_StandIn):
    """A scipy sparse matrix from its state: ``data``, ``indices``, ``indptr`` and ``_shape`` (or ``shape``)."""

    compressed_axis = 1  # CSC: ``indptr`` runs over columns, ``indices`` are rows


class _CsrStandIn(_SparseStandIn):
    compressed_axis = 0  # CSR: ``indptr`` runs over rows, ``indices`` are columns


def _reconstructor(cls: Any, base: Any, state: Any) -> _StandIn:
    """Protocol-0/1 ``copyreg._reconstructor``, for stand-ins only (the real one calls ``base.__new__(cls)``)."""
    if not (isinstance(cls, type) and issubclass(cls, _StandIn) and base is object and state is None):
        raise pickle.UnpicklingError("copyreg._reconstructor is allowed for sparse matrices and chumpy arrays only")
    return cls.__new__(cls)


def _latin1_bytes(text: Any = "", encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 writes bytes into protocol-2 pickles (latin-1 text back to bytes), only."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError("_codecs.encode is allowed for latin-1 byte strings only")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """``bytes()`` as protocol-2 pickles write an empty byte string."""
    return b""


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) as written in the pickle -> what the unpickler gets; Python-2 spellings included.

    numpy's own reconstruction functions only ever build arrays, dtypes and scalars; everything else maps to a
    function or stand-in class of this module.
    """
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2 (numpy.core is its deprecated alias)
    except ImportError:
        from numpy.core import multiarray, numeric  # numpy 1.x

    array_globals = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.update({(module, name): value for name, value in array_globals.items()})
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = numeric._frombuffer
    for module in ("scipy.sparse.csc", "scipy.sparse._csc"):
        allowed[(module, "csc_matrix")] = allowed[(module, "csc_array")] = _SparseStandIn
    for module in ("scipy.sparse.csr", "scipy.sparse._csr"):
        allowed[(module, "csr_matrix")] = allowed[(module, "csr_array")] = _CsrStandIn
    for builtins in ("builtins", "__builtin__"):
        allowed.update({(builtins, "object"): object, (builtins, "set"): set, (builtins, "frozenset"): frozenset,
                        (builtins, "bytes"): _empty_bytes})
    for copyreg in ("copyreg", "copy_reg"):
        allowed[(copyreg, "_reconstructor")] = _reconstructor
    allowed[("_codecs", "encode")] = _latin1_bytes
    return allowed


class SmplUnpickler(pickle.Unpickler):
    """An unpickler for SMPL model files: arrays, sparse matrices and chumpy arrays, nothing else.

    ``find_class`` is the only way a pickle reaches code; here it returns numpy's array reconstruction, a few
    inert builtins (``set``, ``object``) and this module's stand-ins, and refuses every other global before it
    is imported. Use ``encoding="latin1"`` for the Python-2 SMPL files (numpy's documented setting).
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals().get((module, name))
        if allowed is not None:
            return allowed
        if (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier():
            return _ChumpyStandIn
        raise UnsafePickleError(f"refuses to load global {module}.{name} (not an array)")


def read_smpl_pickle(path: str | Path) -> dict[str, Any]:
    """The dict of an SMPL ``.pkl``, read with :class:`SmplUnpickler` (values may still be stand-ins).

    Raises:
        UnsafePickleError: the pickle names a global that is not an array (nothing in it ran).
        AvatarError: not a readable pickle of a dict.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        loaded = SmplUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: the restricted SMPL reader {err}; is this the SMPL model from "
                                f"{SMPL_URL}?") from None
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError) as err:
        raise AvatarError(f"{path}: not a readable SMPL pickle ({type(err).__name__}: {err})") from None
    if not isinstance(loaded, dict):
        raise AvatarError(f"{path}: an SMPL pickle holds a dict of arrays, this one a {type(loaded).__name__}")
    return loaded


# ---------------------------------------------------------------- stand-ins -> plain arrays


def _dense(sparse: _SparseStandIn, key: str) -> np.ndarray:
    state = sparse.state
    shape = state.get("_shape", state.get("shape"))
    try:
        data, indices, indptr = (np.asarray(state[name]) for name in ("data", "indices", "indptr"))
        rows, cols = (int(n) for n in shape)
    except (KeyError, TypeError, ValueError):
        raise AvatarError(f"{key}: a sparse matrix without data/indices/indptr/shape") from None
    outer, inner = (cols, rows) if sparse.compressed_axis == 1 else (rows, cols)
    if (len(indptr) != outer + 1 or len(indices) != len(data) or indptr[-1] != len(data)
            or np.any(np.diff(indptr) < 0) or (len(indices) and (indices.min() < 0 or indices.max() >= inner))):
        raise AvatarError(f"{key}: an inconsistent sparse matrix ({rows}×{cols})")
    dense = np.zeros((rows, cols), dtype=data.dtype)
    compressed = np.repeat(np.arange(outer), np.diff(indptr))
    where = (indices, compressed) if sparse.compressed_axis == 1 else (compressed, indices)
    np.add.at(dense, where, data)  # duplicate entries add up, as in scipy
    return dense


def plain_array(value: Any, key: str, depth: int = 0) -> np.ndarray:
    """``value`` (an array, a sparse-matrix or chumpy stand-in) as a plain numeric numpy array.

    Raises:
        AvatarError: anything that is not a stored numeric array (e.g. a chumpy expression, an object array).
    """
    if depth > MAX_NESTING:
        raise AvatarError(f"{key}: nested too deeply to be an array")
    if isinstance(value, _SparseStandIn):
        return _dense(value, key)
    if isinstance(value, _ChumpyStandIn):
        if "x" not in value.state:
            terms = ", ".join(sorted(k for k in value.state if not k.startswith("_"))) or "none"
            raise AvatarError(f"{key}: a chumpy expression (terms: {terms}), not a stored array; download the "
                              f"SMPL 1.1 'for Python' files from {SMPL_URL}")
        return plain_array(value.state["x"], key, depth + 1)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return np.ascontiguousarray(value)
    what = f"an array of {value.dtype}" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
    raise AvatarError(f"{key}: expected a numeric array, got {what}")


def smpl_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The :data:`SMPL_KEYS` of the SMPL pickle at ``path`` as plain arrays, checked for SMPL's sizes.

    Raises:
        UnsafePickleError: the file names a global that is not an array.
        AvatarError: unreadable, a field missing or not an array, or not SMPL's sizes.
    """
    loaded = read_smpl_pickle(path)
    missing = [key for key in SMPL_KEYS if key not in loaded]
    if missing:
        raise AvatarError(f"{path}: not an SMPL model, missing {', '.join(missing)}")
    try:
        arrays = {key: plain_array(loaded[key], key) for key in SMPL_KEYS}
    except AvatarError as err:
        raise AvatarError(f"{path}: {err}") from None
    check_smpl_arrays(arrays, str(path))
    return arrays


# ---------------------------------------------------------------- files


def find_smpl_pickles(src_dir: str | Path) -> dict[Gender, Path]:
    """gender -> the SMPL pickle for it under ``src_dir`` (module docstring, step 1); ``SMPL_<GENDER>.pkl`` wins
    over the official names, and of several official versions the highest (v1.1 over v1.0)."""
    root = Path(src_dir).expanduser()
    found: dict[Gender, Path] = {}
    official: dict[Gender, list[Path]] = {}
    for sub in SEARCH_DIRS:
        folder = root / sub
        if not folder.is_dir():
            continue
        for gender in GENDERS:
            candidate = folder / model_file_name(gender, ".pkl")
            if gender not in found and candidate.is_file():
                found[gender] = candidate
        for file in sorted(folder.iterdir()):
            match = OFFICIAL_NAME.fullmatch(file.name)
            if match and file.is_file():
                official.setdefault(OFFICIAL_GENDER[match.group(1).lower()], []).append(file)
    for gender, files in official.items():
        found.setdefault(gender, max(files, key=lambda f: f.name.lower()))
    return {gender: found[gender] for gender in GENDERS if gender in found}


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` through :func:`lucid_app.io.files.atomic_path` (a temporary file, then a rename): readers never
    see half a file."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def convert_smpl_folder(src_dir: str | Path, dst_dir: str | Path) -> dict[Gender, Path]:
    """Convert every SMPL pickle found under ``src_dir`` to ``dst_dir/SMPL_<GENDER>.npz``.

    Nothing is written unless every file found converts.

    Returns:
        gender -> the ``.npz`` written.

    Raises:
        UnsafePickleError: a file names a global that is not an array (nothing in it ran).
        AvatarError: no SMPL pickle under ``src_dir``, or one is unreadable or not SMPL's sizes.
    """
    src, dst = Path(src_dir).expanduser(), Path(dst_dir).expanduser()
    if not src.is_dir():
        raise AvatarError(f"SMPL download folder {src} does not exist")
    sources = find_smpl_pickles(src)
    if not sources:
        names = ", ".join(model_file_name(g, ".pkl") for g in GENDERS)
        raise AvatarError(f"no SMPL model in {src}: expected {names} or the official basicmodel_*_lbs_*.pkl files "
                          f"(in {', '.join(SEARCH_DIRS)}); download 'SMPL for Python' from {SMPL_URL}")
    converted = {gender: smpl_arrays(path) for gender, path in sources.items()}
    written: dict[Gender, Path] = {}
    for gender, arrays in converted.items():
        written[gender] = dst / model_file_name(gender)
        write_npz_atomic(written[gender], arrays)
        logger.info("SMPL %s: %s -> %s", gender, sources[gender], written[gender])
    return written


# ---------------------------------------------------------------- command line


def cmd_smpl_convert(args: argparse.Namespace) -> dict[str, Any]:
    """``python -m lucid_app smpl-convert SRC_DIR DST_DIR``: the JSON summary of :func:`convert_smpl_folder`."""
    start = time.perf_counter()
    written = convert_smpl_folder(args.src_dir, args.dst_dir)
    return {
        "command": "smpl-convert", "src_dir": str(args.src_dir), "dst_dir": str(args.dst_dir),
        "converted": {gender: str(path) for gender, path in written.items()}, "vertices": SMPL_NUM_VERTICES,
        "joints": SMPL_NUM_JOINTS, "wall_s": round(time.perf_counter() - start, 3),
    }


def add_smpl_convert_arguments(convert: argparse.ArgumentParser) -> None:
    """The arguments of the CLI's ``smpl-convert`` (``lucid_app.cli.main`` registers the command and adds these when it
    is used: importing this module imports the avatar package, and so torch)."""
    convert.description = ("Reads SMPL_NEUTRAL.pkl / SMPL_MALE.pkl / SMPL_FEMALE.pkl (or the official "
                           "basicmodel_*.pkl) with a restricted unpickler that builds arrays only, and writes "
                           "DST_DIR/SMPL_<GENDER>.npz.")
    convert.add_argument("src_dir", help="the SMPL download folder (searched with its smpl/ and models/ folders)")
    convert.add_argument("dst_dir", help="folder to write SMPL_<GENDER>.npz into (pass it as --smpl-dir)")
    convert.set_defaults(func=cmd_smpl_convert)
