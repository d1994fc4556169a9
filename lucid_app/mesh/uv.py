"""UV unwrapping of the extracted mesh with xatlas: charts, their layout in a square texture, and the seams.

Why xatlas (``xatlas`` on PyPI, Python bindings of Jonathan Young's xatlas, the unwrapper behind Godot's lightmapper
and DreamGaussian's textured export): a maintained, self-contained wheel (numpy only, ~260 kB) that segments the
surface into charts of bounded distortion, parameterises them and packs them with a padding that bilinear
filtering respects. Measured on the toy car's watertight mesh (2 cores): 0.17 s for 2k faces, 2.7 s for 20k faces.

xatlas sizes its atlas to about ``size_px`` (it may overshoot by a few per cent) and normalises the UVs to
[0, 1] by that size, so the padding in texels of the ``size_px`` texture is ``padding_px * size_px / atlas size``;
:data:`DEFAULT_PADDING_PX` leaves at least 3 texels between charts. The unwrapped mesh splits vertices along
seams (one vertex per (position, UV) pair); ``source_vertex`` maps each back to the welded mesh, whose edges the
seam count is taken on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lucid_app.config.schema import MESH_TEXTURE_RANGE_PX
from lucid_app.mesh.density import MeshError

logger = logging.getLogger(__name__)

DEFAULT_PADDING_PX = 4
# The median face area xatlas sees (its own units): slivers of 1e-8 of it stay above float32's epsilon.
UNWRAP_MEDIAN_AREA = 1e4
MIN_TEXTURE_PX, MAX_TEXTURE_PX = MESH_TEXTURE_RANGE_PX


@dataclass(frozen=True)
class UVMesh:
    """A mesh split along UV seams, with texture coordinates.

    Attributes:
        vertices: [V', 3] positions (the welded mesh's, repeated along seams).
        faces: [F, 3] indices into ``vertices`` (face f is the welded mesh's face f).
        uvs: [V', 2] texture coordinates in [0, 1] (u right, v up: OBJ / trimesh).
        source_vertex: [V'] index of each vertex in the welded mesh.
        chart: [F] chart (UV island) of each face.
        charts: number of charts.
        seam_edges: edges of the welded mesh cut by a UV seam.
        size_px: texture size the layout was packed for.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    source_vertex: np.ndarray
    chart: np.ndarray
    charts: int
    seam_edges: int
    size_px: int


def check_texture_size(size_px: int) -> int:
    """``size_px`` if it is an integer in [MIN_TEXTURE_PX, MAX_TEXTURE_PX], else :class:`MeshError`."""
    if not MIN_TEXTURE_PX <= int(size_px) <= MAX_TEXTURE_PX:
        raise MeshError(f"the texture size must be between {MIN_TEXTURE_PX} and {MAX_TEXTURE_PX} px, got {size_px}")
    return int(size_px)


def unwrap(vertices: np.ndarray, faces: np.ndarray, size_px: int, padding_px: int = DEFAULT_PADDING_PX) -> UVMesh:
    """Charts and their packing in a ``size_px`` square texture (xatlas, see the module docstring).

    Args:
        vertices: [V, 3] positions of the welded mesh.
        faces: [F, 3] its triangles.
        size_px: texture size in pixels.
        padding_px: texels between charts asked of xatlas.

    Raises:
        MeshError: a bad size, or a mesh xatlas cannot unwrap into one texture.
    """
    import xatlas

    size_px = check_texture_size(size_px)
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    # xatlas ignores faces whose area is below float32's epsilon (they get no chart and UV (0, 0)): marching cubes
    # leaves slivers down to ~1e-8 of the median area (a face at a grid corner), so the mesh is scaled first.
    corners = vertices[faces]
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    scale = np.sqrt(UNWRAP_MEDIAN_AREA / max(float(np.median(areas)), 1e-30))
    atlas = xatlas.Atlas()
    atlas.add_mesh((vertices * scale).astype(np.float32), faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = size_px
    pack.padding = int(padding_px)
    pack.bilinear = True
    # Charts on 4 x 4 texel blocks: fewer places to try, so packing a 1024 px atlas cost 3.6 s of CPU instead of 5.0
    # (a 19.5k-face blob), with the texture as well used (73% instead of 69%).
    pack.blockAlign = True
    atlas.generate(xatlas.ChartOptions(), pack)
    if atlas.atlas_count != 1:
        raise MeshError(f"xatlas packed the mesh into {atlas.atlas_count} textures, not one")
    source, uv_faces, uvs = atlas[0]
    uv_faces = np.asarray(uv_faces, dtype=np.int64)
    source = np.asarray(source, dtype=np.int64)
    if uv_faces.shape != faces.shape or not np.array_equal(source[uv_faces], faces):
        raise MeshError("xatlas changed the mesh's faces")
    chart = np.full(len(faces), -1, dtype=np.int64)
    for index in range(atlas.get_mesh_chart_count(0)):
        chart[np.asarray(atlas.get_mesh_chart(0, index).faces, dtype=np.int64)] = index
    if (chart < 0).any():
        logger.warning("unwrap: %d degenerate faces got no chart (zero-area UVs)", int((chart < 0).sum()))
    logger.info("unwrap: %d charts, atlas %d x %d for %d px, utilisation %.2f", atlas.chart_count, atlas.width,
                atlas.height, size_px, atlas.utilization)
    return UVMesh(vertices=vertices[source], faces=uv_faces, uvs=np.clip(np.asarray(uvs, np.float64), 0.0, 1.0),
                  source_vertex=source, chart=chart, charts=int(atlas.chart_count),
                  seam_edges=seam_edge_count(faces, uv_faces), size_px=size_px)


def seam_edge_count(faces: np.ndarray, uv_faces: np.ndarray) -> int:
    """Edges of the welded mesh ``faces`` [F, 3] whose faces do not share both UV vertices in ``uv_faces`` [F, 3].

    Each face's three edges are keyed by their welded vertex pair; an edge is a seam when its faces use more than
    two distinct UV vertices along it (an open edge, with one face, is not counted).
    """
    faces, uv_faces = np.asarray(faces, np.int64), np.asarray(uv_faces, np.int64)
    a, b = faces, np.roll(faces, -1, axis=1)
    ua, ub = uv_faces, np.roll(uv_faces, -1, axis=1)
    lo, hi = np.minimum(a, b).ravel(), np.maximum(a, b).ravel()
    n = int(faces.max()) + 1 if faces.size else 1
    edge = lo * n + hi
    uv_ends = np.concatenate([np.stack([edge, ua.ravel()], 1), np.stack([edge, ub.ravel()], 1)])
    distinct = np.unique(uv_ends, axis=0)[:, 0]
    _, per_edge = np.unique(distinct, return_counts=True)
    return int((per_edge > 2).sum())
