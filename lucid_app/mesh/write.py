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


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] → linear RGB (IEC 61966-2-1): the inverse of a display's encoding."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def for_gltf(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """``mesh`` as glTF viewers should show it: glTF reads vertex colours (``COLOR_0``) as *linear* RGB and a mesh
    without a material as fully metallic, so sRGB colours written as they are show brighter and tinted by the
    viewer's environment (a grey mesh came out lavender-white in the app). The colours go in linearised (the
    viewer's display encoding restores them) with a matte material (metallic 0, roughness 1, white base)."""
    rgba = np.asarray(mesh.visual.vertex_colors, dtype=np.float64) / 255.0
    linear = np.concatenate([srgb_to_linear(rgba[:, :3]), rgba[:, 3:]], axis=1)
    visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
        baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0))
    visual.vertex_attributes["color"] = np.round(linear * 255.0).astype(np.uint8)
    return trimesh.Trimesh(mesh.vertices, mesh.faces, visual=visual, process=False)


def write_mesh(path: str | Path, mesh: trimesh.Trimesh) -> Path:
    """Write a world-frame mesh as ``.glb`` (binary glTF: linear vertex colours, a matte material, see
    :func:`for_gltf`) or ``.obj`` (sRGB vertex colours), y up, atomically.

    Raises:
        MeshError: any other suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_FORMATS:
        raise MeshError(f"{path}: mesh format must be one of {', '.join(MESH_FORMATS)}, got {suffix or 'none'}")
    upright = to_y_up(mesh)
    if suffix == ".glb":
        upright = for_gltf(upright)
    with atomic_path(path) as tmp:
        upright.export(tmp, file_type=suffix[1:])
    return path
