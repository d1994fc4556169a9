"""The mesh files: world frame (z up) to glTF's (y up), written atomically as ``.glb`` or ``.obj``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from lucid_app.io.files import atomic_path
from lucid_app.mesh.density import MeshError

# World frame (z up, front = +y, see cameras.py) -> glTF frame (y up, the asset's front faces +z). A proper
# rotation (180 deg about (0, 1, 1)/sqrt(2)): x -> -x, y -> z, z -> y. It keeps the viewer's left/right too: seen
# from the front, our -x is on the viewer's right, as +x is in glTF. Applied to vertices as ``v @ R.T``.
Z_UP_TO_Y_UP = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
MESH_FORMATS = (".glb", ".obj")


def to_y_up(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A copy of ``mesh`` rotated from the world frame (z up) to glTF's (y up), see ``Z_UP_TO_Y_UP``."""
    transform = np.eye(4)
    transform[:3, :3] = Z_UP_TO_Y_UP
    out = mesh.copy()
    out.apply_transform(transform)
    return out


def write_mesh(path: str | Path, mesh: trimesh.Trimesh) -> Path:
    """Write a world-frame mesh as ``.glb`` (binary glTF) or ``.obj``, y up, with vertex colours, atomically.

    Raises:
        MeshError: any other suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_FORMATS:
        raise MeshError(f"{path}: mesh format must be one of {', '.join(MESH_FORMATS)}, got {suffix or 'none'}")
    upright = to_y_up(mesh)
    with atomic_path(path) as tmp:
        upright.export(tmp, file_type=suffix[1:])
    return path
