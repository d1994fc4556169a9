"""What lucid-app loads (DESIGN §6b, docs/SECURITY.md): weights are never unpickled unless the operator says so.

``.ckpt``, ``.bin``, ``.pt`` and ``.pth`` files are Python pickles: loading one can run arbitrary code. Stable
Diffusion, ControlNet, LoRA and textual-inversion weights are therefore read from safetensors only (diffusers
folders and hub repos with safetensors weights included) unless the caller passes ``allow_pickle=True`` — which only
the CLI does, behind its explicit ``--allow-pickle`` flag. The app never does; what its clients may name at all is
:mod:`lucid_app.app.client_config`.

A local weight file is judged by its content, not its name: a safetensors file starts with the 8-byte little-endian
length of a JSON header that maps tensor names to ``dtype``, ``shape`` and ``data_offsets``
(:func:`read_safetensors_header`). A pickle renamed ``.txt`` or ``.safetensors`` fails that check before any loader
sees it. In a local folder every ``*.safetensors`` file is checked the same way (diffusers reads only those with
``use_safetensors=True``).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from lucid_app.config import ModelConfig

# File name endings of pickle-based weight formats (PyTorch's torch.save and the original SD checkpoints).
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
SAFE_SUFFIX = ".safetensors"
ALLOW_PICKLE_HINT = "the command line loads them with --allow-pickle, if you trust the file"
# safetensors' own limit on the JSON header (100 MB); anything larger is not a safetensors file.
MAX_HEADER_BYTES = 100_000_000
# A local weight folder with more files than this to check is refused rather than walked.
MAX_FOLDER_FILES = 10_000
_HEADER_LENGTH = struct.Struct("<Q")
_TENSOR_KEYS = ("dtype", "shape", "data_offsets")


class UnsafeWeightsError(ValueError):
    """A weight file in a pickle format, or one that is not what its name says, was named where only safetensors are
    loaded (the message says which key and file)."""


def weight_sources(model: ModelConfig) -> list[tuple[str, str]]:
    """Every weight source a Stable Diffusion model config names, as (config key, value): the model, ControlNet,
    LoRA and each textual-inversion embedding (empty settings left out)."""
    sources = [("model.id", model.id), ("model.controlnet", model.controlnet), ("model.lora", model.lora)]
    sources += [(f"model.textual_inversion[{i}]", p) for i, p in enumerate(model.textual_inversion)]
    return [(key, value) for key, value in sources if value]


def is_pickle_file(name: str) -> bool:
    """True when ``name`` ends like a pickle-based weight file (``.ckpt``, ``.bin``, ``.pt``, ...)."""
    return name.strip().lower().endswith(PICKLE_SUFFIXES)


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked: 8 bytes of little-endian length N, then N bytes of a JSON
    object whose entries (``__metadata__`` aside) each give a tensor's ``dtype``, ``shape`` and ``data_offsets``.

    Raises:
        ValueError: the file is not a safetensors file (the message says what is wrong, in a few words).
        OSError: it cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(_HEADER_LENGTH.size)
        if len(head) < _HEADER_LENGTH.size:
            raise ValueError("too short for a safetensors header")
        (length,) = _HEADER_LENGTH.unpack(head)
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - _HEADER_LENGTH.size):
            raise ValueError("its first 8 bytes are not the length of a safetensors header")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("its header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or any(key not in entry for key in _TENSOR_KEYS):
            raise ValueError("its header does not describe tensors")
    return header


def check_weight_file(key: str, path: str | Path) -> None:
    """Refuse a local weight file that is not safetensors by content (module docstring).

    Raises:
        UnsafeWeightsError: one line naming ``key`` and the file's name (never its folder).
    """
    path = Path(path)
    try:
        read_safetensors_header(path)
    except (ValueError, OSError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UnsafeWeightsError(
            f"{key}: {path.name!r} is not a safetensors file ({reason}); only safetensors weights are loaded, "
            f"whatever the file is named ({ALLOW_PICKLE_HINT})"
        ) from None


def check_weight_source(key: str, value: str) -> None:
    """Check what a weight setting names on this machine: a local file by its content (a pickle-format name is
    refused as such), every ``*.safetensors`` file of a local folder likewise; hub ids and missing paths are left to
    the loader (which reads safetensors only and names a missing path).

    Raises:
        UnsafeWeightsError: a pickle, or a file that is not safetensors by content.
    """
    if is_pickle_file(value):
        raise UnsafeWeightsError(
            f"{key}: {Path(value).name!r} is a pickle-format weight file, which can run code when loaded; "
            f"only {SAFE_SUFFIX} files, diffusers folders and hub ids are loaded ({ALLOW_PICKLE_HINT})"
        )
    path = Path(value).expanduser()
    if path.is_file():
        check_weight_file(key, path)
    elif path.is_dir():
        files = []
        for file in path.rglob(f"*{SAFE_SUFFIX}"):
            files.append(file)
            if len(files) > MAX_FOLDER_FILES:
                raise UnsafeWeightsError(f"{key}: {path.name!r} holds more than {MAX_FOLDER_FILES} weight files")
        for file in sorted(files):
            check_weight_file(key, file)


def check_weights(model: ModelConfig, allow_pickle: bool = False) -> None:
    """Refuse, unless ``allow_pickle``, every weight source of a Stable Diffusion model config that is a pickle or,
    on this machine, not safetensors by content (:func:`check_weight_source`).

    Hub repos are loaded with ``use_safetensors=True`` by :mod:`lucid_app.priors.stable_diffusion`, which refuses
    their pickled weights.

    Raises:
        UnsafeWeightsError: the first source that is refused, with its key.
    """
    if allow_pickle:
        return
    for key, value in weight_sources(model):
        check_weight_source(key, value)
