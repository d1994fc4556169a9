"""A small CPU triangle rasteriser (NumPy): which triangle covers each pixel centre, and where in it.

It serves three jobs: in UV space it finds each texel's triangle and barycentrics for baking (no depth test: UV
islands do not overlap); in camera space, with a z-buffer, it renders a mesh with a texture or vertex colours
(the texture-fidelity benchmark and its tests) and gives the mesh's own depth for the projection bake's visibility.

Conventions (as in :mod:`lucid_app.render.cameras`): pixel (row i, column j) has its centre at ``(x, y) = (j + 0.5,
i + 0.5)``; a pixel is covered by a triangle when its centre lies inside or on an edge, so a centre on a shared
edge is covered twice and the z-buffer (or ``first``) keeps one. Flat index of pixel (i, j) is ``i * width + j``.
Texture coordinates follow OBJ / trimesh: ``u`` right, ``v`` up, texel (i, j) has its centre at
``((j + 0.5) / W, 1 - (i + 0.5) / H)``.

Algorithm (:func:`rasterize`):

1. Each triangle's pixel bounding box (centres within its extent, clipped to the image); triangles of (nearly) zero
   area or with a vertex at or behind the near plane are skipped.
2. Every (triangle, pixel in its box) pair is generated in chunks of at most ``max_pairs`` pairs, the pixel's
   barycentrics taken from edge functions, and the pairs whose barycentrics are all >= -``EDGE_TOLERANCE`` kept.
3. With depths: barycentrics are made perspective-correct (``b_i / z_i`` normalised; ``1/z`` is affine in screen
   space) and the nearest fragment per pixel is kept. Without: the first fragment per pixel is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lucid_app.render.cameras import CameraBatch

EDGE_TOLERANCE = 1e-9
MIN_AREA_PX2 = 1e-12
NEAR_Z = 1e-3
MAX_PAIRS = 1 << 22
# A shading function: (face [P], barycentrics [P, 3]) -> colours [P, 3].
Shader = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Fragments:
    """The pixels a raster covers, one fragment each.

    Attributes:
        pixel: [P] flat pixel indices (``row * width + column``), sorted, unique.
        face: [P] index of the covering triangle.
        bary: [P, 3] barycentrics of the pixel centre in that triangle (perspective-correct with depths).
        depth: [P] camera-space depth, or None for a raster without depths.
    """

    pixel: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    depth: np.ndarray | None


def rasterize(xy: np.ndarray, faces: np.ndarray, width: int, height: int, depth: np.ndarray | None = None,
              max_pairs: int = MAX_PAIRS) -> Fragments:
    """The fragments of triangles ``faces`` over vertices at pixel positions ``xy`` (the module docstring's steps).

    Args:
        xy: [V, 2] vertex positions in pixels (x right, y down).
        faces: [F, 3] vertex indices.
        width, height: image size in pixels.
        depth: [V] camera-space depths for a z-buffered, perspective-correct raster; None for none.
        max_pairs: (triangle, pixel) candidates evaluated at once (bounds memory, ~100 bytes each).

    Returns:
        one fragment per covered pixel.
    """
    xy = np.asarray(xy, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    corners = xy[faces]  # [F, 3, 2]
    lo = np.ceil(corners.min(axis=1) - 0.5).astype(np.int64)
    hi = np.floor(corners.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    span = np.maximum(hi - lo + 1, 0)
    count = span[:, 0] * span[:, 1]
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    usable = (np.abs(area) > MIN_AREA_PX2) & (count > 0)
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float64)
        usable &= (depth[faces] > NEAR_Z).all(axis=1)
    kept = np.nonzero(usable)[0]
    parts = [_fragments(kept[chunk], corners, lo, span, area, width) for chunk in _chunks(count[kept], max_pairs)]
    pixel = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    face = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    bary = np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, 3))
    if depth is None:
        order = np.lexsort((face, pixel))
        first = _first_of_runs(pixel[order])
        pick = order[first]
        return Fragments(pixel[pick], face[pick], bary[pick], None)
    inv = bary / depth[faces[face]]
    inv_z = inv.sum(axis=1)
    bary = inv / inv_z[:, None]
    z = 1.0 / inv_z
    order = np.lexsort((z, pixel))
    pick = order[_first_of_runs(pixel[order])]
    return Fragments(pixel[pick], face[pick], bary[pick], z[pick])


def _chunks(count: np.ndarray, max_pairs: int) -> list[np.ndarray]:
    """Index ranges over ``count`` [F] whose sums stay within ``max_pairs`` (a lone larger entry is its own)."""
    ends = np.cumsum(count)
    chunks, start = [], 0
    while start < len(count):
        base = ends[start - 1] if start > 0 else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + max_pairs, side="right")))
        chunks.append(np.arange(start, stop))
        start = stop
    return chunks


def _fragments(tri: np.ndarray, corners: np.ndarray, lo: np.ndarray, span: np.ndarray, area: np.ndarray,
               width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The covered (pixel [P], face [P], screen barycentrics [P, 3]) of the triangles ``tri`` (step 2)."""
    n = span[tri, 0] * span[tri, 1]
    face = np.repeat(tri, n)
    local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    cols = np.repeat(span[tri, 0], n)
    px = np.repeat(lo[tri, 0], n) + local % cols
    py = np.repeat(lo[tri, 1], n) + local // cols
    c = corners[face]
    x, y = px + 0.5, py + 0.5
    # Edge function of the edge opposite each corner, divided by the signed area: the barycentrics.
    b0 = ((c[:, 1, 0] - x) * (c[:, 2, 1] - y) - (c[:, 1, 1] - y) * (c[:, 2, 0] - x)) / area[face]
    b1 = ((c[:, 2, 0] - x) * (c[:, 0, 1] - y) - (c[:, 2, 1] - y) * (c[:, 0, 0] - x)) / area[face]
    b2 = 1.0 - b0 - b1
    bary = np.stack([b0, b1, b2], axis=1)
    inside = (bary >= -EDGE_TOLERANCE).all(axis=1)
    return py[inside] * width + px[inside], face[inside], bary[inside]


def _first_of_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Positions [R] where each run of equal values in ``sorted_keys`` [P] starts."""
    if sorted_keys.size == 0:
        return np.zeros(0, np.int64)
    return np.nonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))[0]


def uv_to_pixels(uvs: np.ndarray, width: int, height: int) -> np.ndarray:
    """[V, 2] texture coordinates (v up) -> [V, 2] texel-space positions (x right, y down) of a W x H image."""
    uvs = np.asarray(uvs, dtype=np.float64)
    return np.stack([uvs[:, 0] * width, (1.0 - uvs[:, 1]) * height], axis=1)


def sample_bilinear(image: np.ndarray, uvs: np.ndarray) -> np.ndarray:
    """Bilinear look-up of ``image`` [H, W, C] at texture coordinates ``uvs`` [P, 2] (v up), clamped to the edge.

    Returns:
        [P, C] float64.
    """
    height, width = image.shape[:2]
    xy = uv_to_pixels(uvs, width, height) - 0.5
    x0 = np.floor(xy[:, 0]).astype(np.int64)
    y0 = np.floor(xy[:, 1]).astype(np.int64)
    fx, fy = (xy[:, 0] - x0)[:, None], (xy[:, 1] - y0)[:, None]
    xa, xb = np.clip(x0, 0, width - 1), np.clip(x0 + 1, 0, width - 1)
    ya, yb = np.clip(y0, 0, height - 1), np.clip(y0 + 1, 0, height - 1)
    img = np.asarray(image, dtype=np.float64)
    top = img[ya, xa] * (1.0 - fx) + img[ya, xb] * fx
    bottom = img[yb, xa] * (1.0 - fx) + img[yb, xb] * fx
    return top * (1.0 - fy) + bottom * fy


def texture_shader(faces: np.ndarray, uvs: np.ndarray, texture: np.ndarray) -> Shader:
    """Shade with ``texture`` [H, W, 3] (floats in [0, 1]) at the interpolated ``uvs`` [V, 2] of ``faces`` [F, 3]."""

    def shade(face: np.ndarray, bary: np.ndarray) -> np.ndarray:
        uv = np.einsum("pk,pkc->pc", bary, uvs[faces[face]])
        return sample_bilinear(texture, uv)

    return shade


def vertex_color_shader(faces: np.ndarray, colors: np.ndarray) -> Shader:
    """Shade with the interpolated vertex ``colors`` [V, 3] (floats in [0, 1]) of ``faces`` [F, 3]."""
    colors = np.asarray(colors, dtype=np.float64)

    def shade(face: np.ndarray, bary: np.ndarray) -> np.ndarray:
        return np.einsum("pk,pkc->pc", bary, colors[faces[face]])

    return shade


def project(vertices: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [V, 3] -> pixel positions [V, 2] and camera-space depths [V] (OpenCV camera, pinhole ``K``)."""
    cam = np.asarray(vertices, np.float64) @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    safe = np.where(np.abs(z) > NEAR_Z, z, NEAR_Z)
    xy = np.stack([K[0, 0] * cam[:, 0] / safe + K[0, 2], K[1, 1] * cam[:, 1] / safe + K[1, 2]], axis=1)
    return xy, z


def camera_fragments(vertices: np.ndarray, faces: np.ndarray, cameras: CameraBatch, index: int,
                     scale: int = 1) -> Fragments:
    """The z-buffered fragments of the mesh seen by camera ``index`` of ``cameras``, at ``scale`` x its size."""
    K = cameras.Ks[index].double().cpu().numpy().copy()
    K[:2] *= scale
    xy, z = project(vertices, cameras.viewmats[index].double().cpu().numpy(), K)
    return rasterize(xy, faces, cameras.width * scale, cameras.height * scale, depth=z)


def render_mesh(vertices: np.ndarray, faces: np.ndarray, cameras: CameraBatch, shader: Shader,
                background: tuple[float, float, float], supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render a mesh from every camera, unlit (colour = the shader's), antialiased by ``supersample`` x
    ``supersample`` samples per pixel averaged.

    Args:
        vertices: [V, 3] world positions; faces: [F, 3].
        cameras: C cameras (OpenCV frame, :mod:`lucid_app.render.cameras`).
        shader: colours of fragments (:func:`texture_shader`, :func:`vertex_color_shader`).
        background: RGB in [0, 1] where no triangle is seen.
        supersample: samples per pixel along each axis.

    Returns:
        (rgb [C, H, W, 3] float32 over the background, coverage [C, H, W] float32 in [0, 1]).
    """
    s = int(supersample)
    w, h = cameras.width * s, cameras.height * s
    images, covers = [], []
    for index in range(len(cameras)):
        frags = camera_fragments(vertices, faces, cameras, index, s)
        rgb = np.empty((h * w, 3))
        rgb[:] = background
        rgb[frags.pixel] = shader(frags.face, frags.bary)
        cover = np.zeros(h * w)
        cover[frags.pixel] = 1.0
        images.append(rgb.reshape(cameras.height, s, cameras.width, s, 3).mean(axis=(1, 3)))
        covers.append(cover.reshape(cameras.height, s, cameras.width, s).mean(axis=(1, 3)))
    return np.stack(images).astype(np.float32), np.stack(covers).astype(np.float32)
