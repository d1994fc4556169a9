"""The mesh files: world frame (z up) to glTF's (y up), written atomically as ``.glb`` or ``.obj``."""

from __future__ import annotations

import json
import struct
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
UNLIT = "KHR_materials_unlit"
GLB_MAGIC, GLB_JSON_CHUNK = 0x46546C67, 0x4E4F534A


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


# The app's mesh viewer (Babylon.js) lights a scene with its own tinted environment: a grey mesh under any lit material
# shows lavender. Its copy of the mesh is unlit (KHR_materials_unlit: the colours as they are) with a soft shading
# baked into the colours from this direction (y up, towards the front and the right), so the shape still reads; the
# shading keeps at least SHADE_FLOOR of each colour.
VIEW_LIGHT = np.array([0.4, 0.8, 0.45]) / np.linalg.norm([0.4, 0.8, 0.45])
SHADE_FLOOR = 0.75


def baked_shading(normals: np.ndarray) -> np.ndarray:
    """Per-vertex brightness factors [N] in [:data:`SHADE_FLOOR`, 1] from unit normals [N, 3] (Lambert towards
    :data:`VIEW_LIGHT`, faces turned away at the floor)."""
    return SHADE_FLOOR + (1.0 - SHADE_FLOOR) * np.clip(normals @ VIEW_LIGHT, 0.0, 1.0)


def with_unlit_materials(glb: bytes) -> bytes:
    """A binary glTF whose materials carry ``KHR_materials_unlit`` (its JSON chunk rewritten, the binary kept)."""
    json_length = struct.unpack_from("<I", glb, 12)[0]
    gltf = json.loads(glb[20:20 + json_length])
    used = gltf.setdefault("extensionsUsed", [])
    if UNLIT not in used:
        used.append(UNLIT)
    for material in gltf.get("materials", []):
        material.setdefault("extensions", {})[UNLIT] = {}
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), GLB_JSON_CHUNK) + text + glb[20 + json_length:]
    return struct.pack("<III", GLB_MAGIC, 2, 12 + len(body)) + body


def write_viewer_mesh(path: str | Path, mesh: trimesh.Trimesh) -> Path:
    """The app's viewer copy of a world-frame mesh: ``.glb``, y up, unlit, its colours with :func:`baked_shading`
    (see :data:`VIEW_LIGHT`), written atomically."""
    upright = to_y_up(mesh)
    rgba = np.asarray(upright.visual.vertex_colors, dtype=np.float64)
    rgba[:, :3] *= baked_shading(np.asarray(upright.vertex_normals))[:, None]
    shaded = trimesh.Trimesh(upright.vertices, upright.faces, vertex_colors=np.round(rgba).astype(np.uint8),
                             process=False)
    glb = with_unlit_materials(for_gltf(shaded).export(file_type="glb"))
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_bytes(glb)
    return Path(path)


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
