"""A posed SMPL body in our world frame: model loading (through ``smplx``), pose presets and custom pose files.

Frames
------
SMPL's own frame is **y up, the body facing +z**, +x being the body's left. Ours (``cameras.py``) is **z up, the
front facing +y**. The one rotation between them, ``world = SMPL_TO_WORLD @ smpl``::

    x_world = -x_smpl     (the body's left ends on world -x, i.e. on the right of the front camera's image)
    y_world =  z_smpl     (the body faces +y, towards the front camera at azimuth 0)
    z_world =  y_smpl     (up is up)

a proper rotation (det +1: 180° about the SMPL y axis, then +90° about x). After rotating, the body is scaled so
that its **rest-pose** (T-pose) height is ``height`` units (the same scale for every pose) and translated so that
the posed body's bounding box is centred on the origin, where the text-to-3D cameras look.

The SMPL model files are licensed and cannot ship with this project: the user downloads them
(https://smpl.is.tue.mpg.de, free registration, non-commercial licence) and converts the ``.pkl`` files once with
``python -m lucid_app smpl-convert SRC DST`` (``smpl_convert.py``: a restricted unpickler that builds numpy arrays
and nothing else). At run time only the converted ``SMPL_NEUTRAL.npz`` (or ``SMPL_MALE.npz`` /
``SMPL_FEMALE.npz``, directly in ``--smpl-dir`` or in a ``smpl/`` sub-folder) is read, with ``allow_pickle=False``:
no pickle is ever loaded while the CLI or the app runs, whoever names the folder.
"""

from __future__ import annotations

import json
import logging
import typing
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml

from lucid_app.config.presets import PRESETS_DIR

logger = logging.getLogger(__name__)

SMPL_NUM_VERTICES = 6890
SMPL_NUM_JOINTS = 24
SMPL_NUM_BETAS = 10
SMPL_URL = "https://smpl.is.tue.mpg.de"
POSES_FILE = PRESETS_DIR / "poses" / "smpl_poses.yaml"
DEFAULT_HEIGHT = 1.8
Gender = Literal["neutral", "male", "female"]
GENDERS: tuple[Gender, ...] = typing.get_args(Gender)
# The fields smplx's SMPL layer reads (``data_struct``); a converted ``.npz`` holds exactly these.
SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
CONVERT_COMMAND = "python -m lucid_app smpl-convert"

# SMPL's 24 joints in kinematic order; ``body_pose`` holds joints 1..23 (the pelvis takes ``global_orient``).
JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)

SMPL_TO_WORLD = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


class AvatarError(ValueError):
    """A user-facing avatar problem (missing SMPL files, bad pose): the message says what to do."""


@dataclass(frozen=True)
class Pose:
    """SMPL pose parameters (axis-angle, radians, SMPL frame).

    Attributes:
        body_pose: [23, 3] rotations of joints 1..23 relative to their parents.
        global_orient: [3] rotation of the pelvis (the whole body).
        betas: [10] shape coefficients.
    """

    body_pose: torch.Tensor
    global_orient: torch.Tensor
    betas: torch.Tensor


@dataclass(frozen=True)
class Body:
    """A posed body in our world frame (z up, front +y, see the module docstring).

    Attributes:
        vertices: [V, 3] float32 posed vertices (V = 6890 for SMPL).
        faces: [F, 3] int64 triangles.
        joints: [24, 3] float32 posed joint positions.
        skin_weights: [V, 24] linear-blend skinning weights (used for the part map).
        rest_vertices: [V, 3] float32 T-pose vertices in the world frame (same scale, centred like ``vertices``).
        rest_joints: [24, 3] float32 T-pose joints in the same frame as ``rest_vertices``.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    joints: torch.Tensor
    skin_weights: torch.Tensor
    rest_vertices: torch.Tensor
    rest_joints: torch.Tensor


# ---------------------------------------------------------------- poses


def _pose_library(path: Path = POSES_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def pose_names(path: Path = POSES_FILE) -> list[str]:
    """Names of the pose presets (``presets/poses/smpl_poses.yaml``)."""
    return sorted(_pose_library(path))


def _as_body_pose(value: Any, source: str) -> torch.Tensor:
    """A joint-name mapping or 69 / 23×3 numbers -> [23, 3]."""
    if isinstance(value, dict):
        out = torch.zeros(SMPL_NUM_JOINTS - 1, 3)
        for name, rotation in value.items():
            if name not in JOINT_NAMES[1:]:
                raise AvatarError(f"{source}: unknown joint {name!r}; joints: {', '.join(JOINT_NAMES[1:])}")
            out[JOINT_NAMES.index(name) - 1] = _vector(rotation, 3, f"{source}: body_pose.{name}")
        return out
    flat = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(-1)
    if flat.numel() != 3 * (SMPL_NUM_JOINTS - 1):
        raise AvatarError(f"{source}: body_pose needs 69 numbers (23 joints × 3), got {flat.numel()}")
    return flat.reshape(SMPL_NUM_JOINTS - 1, 3)


def _vector(value: Any, size: int, source: str, pad: bool = False) -> torch.Tensor:
    flat = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(-1)
    if pad and flat.numel() <= size:
        return torch.nn.functional.pad(flat, (0, size - flat.numel()))
    if flat.numel() != size:
        raise AvatarError(f"{source}: expected {size} numbers, got {flat.numel()}")
    return flat


def pose_from_dict(data: dict[str, Any], source: str) -> Pose:
    """A :class:`Pose` from ``body_pose`` (mapping, 69 or 23×3), ``global_orient`` (3) and ``betas`` (≤ 10)."""
    if "body_pose" not in data:
        raise AvatarError(f"{source}: no 'body_pose' (expected keys: body_pose, global_orient, betas)")
    return Pose(
        body_pose=_as_body_pose(data["body_pose"], source),
        global_orient=_vector(data.get("global_orient", [0.0, 0.0, 0.0]), 3, f"{source}: global_orient"),
        betas=_vector(data.get("betas", []), SMPL_NUM_BETAS, f"{source}: betas (at most 10)", pad=True),
    )


def load_pose(name_or_path: str, library: Path = POSES_FILE) -> Pose:
    """A pose preset by name, or a custom ``.npz`` / ``.json`` file with the keys of :func:`pose_from_dict`."""
    presets = _pose_library(library)
    if name_or_path in presets:
        return pose_from_dict(presets[name_or_path] or {"body_pose": {}}, f"pose {name_or_path!r}")
    path = Path(name_or_path)
    if not path.is_file():
        raise AvatarError(
            f"pose {name_or_path!r} is neither a preset ({', '.join(sorted(presets))}) nor an existing .npz/.json file"
        )
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise AvatarError(f"pose file {path}: invalid JSON ({err})") from None
    elif path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as err:
            raise AvatarError(f"pose file {path}: not a readable .npz of plain arrays ({err})") from None
    else:
        raise AvatarError(f"pose file {path}: expected a .npz or .json file")
    return pose_from_dict(data, f"pose file {path}")


# ---------------------------------------------------------------- the model


def model_file_name(gender: Gender, suffix: str = ".npz") -> str:
    """``SMPL_NEUTRAL.npz`` (the converted model; ``suffix=".pkl"`` gives the downloaded one's name)."""
    return f"SMPL_{gender.upper()}{suffix}"


def _missing_message(smpl_dir: Path, problem: str) -> str:
    return (
        f"{problem}\n"
        f"Avatar mode needs the SMPL body model, which is licensed and cannot be bundled: register at {SMPL_URL}, "
        "accept the licence, download 'SMPL for Python', convert it once with "
        f"'{CONVERT_COMMAND} DOWNLOAD_DIR {smpl_dir}' (writes SMPL_NEUTRAL.npz and the other genders found), "
        f"then pass --smpl-dir {smpl_dir}."
    )


def _candidates(root: Path, name: str) -> tuple[Path, Path]:
    return root / name, root / "smpl" / name


def available_genders(smpl_dir: str | Path) -> list[Gender]:
    """The genders with a converted model (``SMPL_<GENDER>.npz``) in ``smpl_dir`` or ``smpl_dir/smpl``."""
    root = Path(smpl_dir).expanduser()
    return [g for g in GENDERS if any(p.is_file() for p in _candidates(root, model_file_name(g)))]


def find_model_file(smpl_dir: str | Path, gender: Gender = "neutral") -> Path:
    """The converted SMPL model ``SMPL_<GENDER>.npz`` in ``smpl_dir`` (or ``smpl_dir/smpl``).

    A downloaded ``.pkl`` is never opened here: finding only one ends with the command that converts it.

    Raises:
        AvatarError: no folder, no model file, or only the unconverted ``.pkl`` (the message says what to do).
    """
    if gender not in GENDERS:
        raise AvatarError(f"unknown SMPL gender {gender!r}; genders: {', '.join(GENDERS)}")
    root = Path(smpl_dir).expanduser()
    if not root.is_dir():
        raise AvatarError(_missing_message(root, f"SMPL folder {root} does not exist."))
    name = model_file_name(gender)
    for candidate in _candidates(root, name):
        if candidate.is_file():
            return candidate
    for pickled in _candidates(root, model_file_name(gender, ".pkl")):
        if pickled.is_file():
            raise AvatarError(
                f"{pickled} is the downloaded SMPL pickle, which is never loaded at run time (a pickle can run code); "
                f"convert it once with '{CONVERT_COMMAND} {pickled.parent} {root}' (writes {root / name})"
            )
    raise AvatarError(_missing_message(root, f"No {name} in {root} (nor in {root / 'smpl'})."))


def check_smpl_arrays(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Check that ``arrays`` hold an SMPL model: the :data:`SMPL_KEYS`, numeric, with SMPL's sizes.

    Expected shapes (V = 6890 vertices, J = 24 joints): ``v_template`` [V, 3], ``shapedirs`` [V, 3, B ≥ 10],
    ``posedirs`` [V, 3, 9·(J-1)], ``J_regressor`` [J, V], ``kintree_table`` [2, J], ``weights`` [V, J],
    ``f`` [F, 3] integer vertex indices.

    Raises:
        AvatarError: a missing field, a wrong shape or type, or indices out of range (naming ``source``).
    """
    missing = [key for key in SMPL_KEYS if key not in arrays]
    if missing:
        raise AvatarError(f"{source}: not an SMPL model, missing {', '.join(missing)} "
                          f"(expected {', '.join(SMPL_KEYS)})")
    v, j = SMPL_NUM_VERTICES, SMPL_NUM_JOINTS
    expected: dict[str, tuple[int | None, ...]] = {
        "v_template": (v, 3), "shapedirs": (v, 3, None), "posedirs": (v, 3, 9 * (j - 1)), "J_regressor": (j, v),
        "kintree_table": (2, j), "weights": (v, j), "f": (None, 3),
    }
    for key, shape in expected.items():
        value = arrays[key]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise AvatarError(f"{source}: {key} must be a numeric array, got {getattr(value, 'dtype', type(value))}")
        if value.ndim != len(shape) or any(want is not None and got != want for got, want in zip(value.shape, shape)):
            want_text = "[" + ", ".join("N" if n is None else str(n) for n in shape) + "]"
            raise AvatarError(f"{source}: {key} has shape {list(value.shape)}, expected {want_text} "
                              f"(SMPL has {v} vertices and {j} joints)")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise AvatarError(f"{source}: {key} holds NaN or infinite values")
    if arrays["shapedirs"].shape[2] < SMPL_NUM_BETAS:
        raise AvatarError(f"{source}: shapedirs has {arrays['shapedirs'].shape[2]} shape components, "
                          f"expected at least {SMPL_NUM_BETAS}")
    faces = arrays["f"]
    if faces.dtype.kind not in "iu" or len(faces) == 0 or faces.min() < 0 or faces.max() >= v:
        raise AvatarError(f"{source}: f must hold integer vertex indices in [0, {v})")
    parents = arrays["kintree_table"][0, 1:]
    if arrays["kintree_table"].dtype.kind not in "iu" or parents.min() < 0 or parents.max() >= j:
        raise AvatarError(f"{source}: kintree_table must hold integer joint indices in [0, {j})")


def read_smpl_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The :data:`SMPL_KEYS` arrays of a converted model, read with ``allow_pickle=False`` and checked.

    Raises:
        AvatarError: unreadable, not an ``.npz`` of plain arrays, or not an SMPL model.
    """
    path = Path(path)
    redo = f"convert the SMPL download again with '{CONVERT_COMMAND} DOWNLOAD_DIR {path.parent}'"
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with loaded:
            arrays = {key: loaded[key] for key in SMPL_KEYS if key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise AvatarError(f"cannot read {path} as a converted SMPL model ({err}); {redo}") from None
    try:
        check_smpl_arrays(arrays, str(path))
    except AvatarError as err:
        raise AvatarError(f"{err}; {redo}") from None
    return arrays


def load_smpl(smpl_dir: str | Path, gender: Gender = "neutral") -> torch.nn.Module:
    """The ``smplx.SMPL`` layer (float32, CPU) built from the converted ``SMPL_<GENDER>.npz`` in ``smpl_dir``.

    The arrays go to smplx as its ``data_struct``, so smplx never opens a model file itself.

    Raises:
        AvatarError: missing or unconverted model files, a corrupt ``.npz``, or no ``smplx`` package.
    """
    path = find_model_file(smpl_dir, gender)
    arrays = read_smpl_npz(path)
    try:
        import smplx
        from smplx.utils import Struct
    except ImportError:
        raise AvatarError("avatar mode needs the 'smplx' package: pip install smplx==0.1.28") from None
    return smplx.SMPL(model_path=str(path.parent), data_struct=Struct(**arrays), gender=gender,
                      num_betas=SMPL_NUM_BETAS)


def _smpl_forward(model: torch.nn.Module, pose: Pose) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(
            betas=pose.betas[None, : model.num_betas].float(),
            body_pose=pose.body_pose.reshape(1, -1).float(),
            global_orient=pose.global_orient[None].float(),
        )
    # smplx appends extra vertex-based joints (nose, toes, ...) after the 24 skeleton joints.
    return out.vertices[0], out.joints[0, :SMPL_NUM_JOINTS]


def to_world(points: torch.Tensor) -> torch.Tensor:
    """SMPL frame -> our world frame (rotation only), [..., 3] -> [..., 3]."""
    return points @ SMPL_TO_WORLD.to(points).T


def pose_body(model: torch.nn.Module, pose: Pose, height: float = DEFAULT_HEIGHT) -> Body:
    """Pose ``model`` and place it in our world frame (module docstring: rotation, rest-height scale, centring)."""
    rest = Pose(torch.zeros_like(pose.body_pose), torch.zeros(3), pose.betas)
    rest_v, rest_j = (to_world(x) for x in _smpl_forward(model, rest))
    posed_v, posed_j = (to_world(x) for x in _smpl_forward(model, pose))
    scale = height / float(rest_v[:, 2].max() - rest_v[:, 2].min())
    centre = 0.5 * (posed_v.min(0).values + posed_v.max(0).values)
    rest_centre = 0.5 * (rest_v.min(0).values + rest_v.max(0).values)
    return Body(
        vertices=((posed_v - centre) * scale).float(),
        faces=torch.as_tensor(np.asarray(model.faces, dtype=np.int64)),
        joints=((posed_j - centre) * scale).float(),
        skin_weights=model.lbs_weights.detach().float(),
        rest_vertices=((rest_v - rest_centre) * scale).float(),
        rest_joints=((rest_j - rest_centre) * scale).float(),
    )


def build_body(
    smpl_dir: str | Path, pose: str | Pose, gender: Gender = "neutral", height: float = DEFAULT_HEIGHT
) -> Body:
    """Load SMPL from ``smpl_dir`` and pose it (a preset name, a pose file or a :class:`Pose`)."""
    model = load_smpl(smpl_dir, gender)
    body = pose_body(model, load_pose(pose) if isinstance(pose, str) else pose, height)
    logger.info("avatar body: %d vertices, %d faces, height %.2f", len(body.vertices), len(body.faces), height)
    return body
