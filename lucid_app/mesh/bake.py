"""Bake a colour texture from the Gaussians: for each texel its surface point, and the colour the splats give there.

Steps (:func:`bake_texture`):

1. Texels (:func:`texel_samples`): the UV triangles are rasterised at the texture size (:mod:`lucid_app.mesh.raster`,
   no depth: islands do not overlap); each covered texel centre gives its face and barycentrics, hence its surface
   point and its normal (vertex normals of the welded mesh, so they are smooth across seams, interpolated).
2. Colour, by ``method``:
   - ``"normal"`` (:func:`colors_along_normals`): what a camera looking straight down the normal at the point sees.
     The line ``x(h) = p + h n`` is traced through the ``neighbors`` nearest Gaussians: with ``d = p - mu`` and
     ``M = Sigma^-1``, each one peaks along it at ``h* = -(d^T M n) / (n^T M n)`` with the least squared
     Mahalanobis distance ``q = d^T M d - (d^T M n)^2 / (n^T M n)``, hence alpha ``min(0.99, o exp(-q / 2))`` (zero
     below 1/255: the renderer's constants); they are composited front to back from outside (decreasing ``h*``),
     and the colour is ``sum w_k c_k / sum w_k`` (straight, not premultiplied). Where no Gaussian reaches the line,
     the nearest one's. Colours are band 0 of the SH (view-independent), as the vertex colours are.
   - ``"views"`` (:mod:`lucid_app.mesh.bake_views`): renders of the Gaussians with our torch renderer projected
     onto the texels the mesh's own z-buffer shows, blended by view angle.
3. Fill (:mod:`lucid_app.mesh.fill`): unused texels (and texels no view saw) from their neighbours.

Why ``"normal"`` is the default (measured, docs/BENCHMARKS.md "Textured mesh export", second pass: 4 scenes x
2k / 20k faces on the budget mesh moved onto the Gaussians' surface, :mod:`lucid_app.mesh.snap`):

- Seconds: the whole 20k-face, 1024 px export took 18.3 s (2 threads) / 7.4 s (1 thread) with it, against 66 s /
  29 s with ``"views"``, whose 30 renders at 256 px cost 27-55 s (loaded) whatever the face count: the issue's
  budget (30 s on 2 cores) rules ``"views"`` out as the default.
- Quality: on that geometry ``"views"`` is the closer one: 0.4-2.6 dB higher in PSNR at held-out cameras (it bakes
  the renderer's own soft blend), and it gives the right stripe of the striped ball at 95.3% of surface points (pure
  colour 81.2%) at 2k faces / 512 px, against 93.8% (87.7%) here. Tracing down the mesh's normal is sensitive to a
  degree of tilt near a colour boundary; a camera ray through a point on the surface is not. (On the first pass's
  swollen coarse meshes it was the other way round: a ray through an off-surface point landed on another stripe in
  each view, 58.7% against 92.4%.)

``"views"`` is one setting away (``mesh --bake views``, ``export.mesh_bake=views``) when the time is there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree

from lucid_app.mesh.density import MeshError, inverse_sqrt_covariances
from lucid_app.mesh.fill import fill_unused
from lucid_app.mesh.raster import rasterize, uv_to_pixels
from lucid_app.mesh.surface import DEFAULT_MIN_OPACITY, visible_gaussians
from lucid_app.mesh.uv import UVMesh
from lucid_app.render.base import Splats
from lucid_app.render.cameras import CameraBatch
from lucid_app.render.torch_ref import ALPHA_MAX, ALPHA_MIN

logger = logging.getLogger(__name__)

BakeMethod = Literal["normal", "views"]
BAKE_METHODS: tuple[str, ...] = ("normal", "views")
DEFAULT_BAKE_METHOD: BakeMethod = "normal"
DEFAULT_BAKE_NEIGHBORS = 8
TEXEL_CHUNK = 1 << 15  # texels per chunk of the normal look-up (~20 [chunk, neighbors] tensors at once)


@dataclass(frozen=True)
class Texels:
    """The texels a UV layout covers, with their surface points.

    Attributes:
        index: [T] flat texel indices (``row * size + column``, row 0 at the top, v = 1).
        points: [T, 3] surface points (world frame).
        normals: [T, 3] unit outward normals there.
    """

    index: np.ndarray
    points: np.ndarray
    normals: np.ndarray


@dataclass(frozen=True)
class BakedTexture:
    """A baked texture.

    Attributes:
        image: [S, S, 3] uint8, every texel filled (row 0 at the top).
        used: [S, S] bool, the texels a face covers.
        coverage: share of the texture's texels in use.
        unseen: share of the used texels that got no colour from the method (filled from neighbours instead).
        method: the bake method.
    """

    image: np.ndarray
    used: np.ndarray
    coverage: float
    unseen: float
    method: str


def check_bake_method(method: str) -> BakeMethod:
    """``method`` if it is one of :data:`BAKE_METHODS`, else :class:`MeshError` naming them."""
    if method not in BAKE_METHODS:
        raise MeshError(f"unknown bake method {method!r}; valid: {', '.join(BAKE_METHODS)}")
    return method  # type: ignore[return-value]


def welded_vertex_normals(uv_mesh: UVMesh) -> np.ndarray:
    """[V', 3] unit normals of the welded mesh (area-weighted face normals summed per welded vertex), per split
    vertex."""
    corners = uv_mesh.vertices[uv_mesh.faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # length = 2 * area
    welded = uv_mesh.source_vertex
    sums = np.zeros((int(welded.max()) + 1, 3))
    for k in range(3):
        np.add.at(sums, welded[uv_mesh.faces[:, k]], face_normals)
    normals = sums[welded]
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)


def texel_samples(uv_mesh: UVMesh) -> Texels:
    """Step 1: the covered texels of ``uv_mesh``'s layout at its ``size_px``, their surface points and normals."""
    size = uv_mesh.size_px
    frags = rasterize(uv_to_pixels(uv_mesh.uvs, size, size), uv_mesh.faces, size, size)
    corners = uv_mesh.faces[frags.face]
    points = np.einsum("tk,tkc->tc", frags.bary, uv_mesh.vertices[corners])
    normals = np.einsum("tk,tkc->tc", frags.bary, welded_vertex_normals(uv_mesh)[corners])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
    return Texels(index=frags.pixel, points=points, normals=normals)


def colors_along_normals(
    points: np.ndarray,
    normals: np.ndarray,
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    rgb: torch.Tensor,
    neighbors: int = DEFAULT_BAKE_NEIGHBORS,
) -> np.ndarray:
    """Step 2, ``"normal"``: the colour seen looking down each normal at each point (the module docstring).

    Args:
        points: [T, 3] surface points; normals: [T, 3] unit outward normals.
        means, quats, scales, opacities: the Gaussians ([N, 3], [N, 4], [N, 3], [N]).
        rgb: [N, 3] colours in [0, 1].
        neighbors: nearest Gaussians traced per point (clamped to N).

    Returns:
        [T, 3] float32 colours in [0, 1].
    """
    k = max(1, min(int(neighbors), means.shape[0]))
    means = means.detach().float().cpu()
    _, nearest_all = cKDTree(means.double().numpy()).query(np.asarray(points, np.float64), k=k, workers=-1)
    nearest_all = torch.as_tensor(np.asarray(nearest_all).reshape(len(points), k))
    precision = _precision_terms(quats.detach().float().cpu(), scales.detach().float().cpu())  # [N, 6]
    opacities = opacities.detach().float().cpu()
    rgb = rgb.detach().float().cpu().clamp(0.0, 1.0)
    p = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    n = torch.as_tensor(np.asarray(normals), dtype=torch.float32)
    out = torch.empty(len(p), 3)
    for start in range(0, len(p), TEXEL_CHUNK):
        stop = start + TEXEL_CHUNK
        nearest = nearest_all[start:stop]  # [t, k]
        m = precision[nearest].unbind(-1)  # six [t, k]: Sigma^-1's xx, yy, zz, xy, xz, yz
        d = (p[start:stop, None, :] - means[nearest]).unbind(-1)  # three [t, k]
        e = n[start:stop, None, :].unbind(-1)  # three [t, 1]
        dd, de, ee = _quadratic(m, d, d), _quadratic(m, d, e), _quadratic(m, e, e).clamp_min(1e-12)
        q = (dd - de.square() / ee).clamp_min(0.0)  # least squared Mahalanobis distance along the line
        alpha = (opacities[nearest] * torch.exp(-0.5 * q)).clamp(max=ALPHA_MAX)
        alpha = torch.where(alpha >= ALPHA_MIN, alpha, 0.0)
        order = torch.argsort(de / ee, dim=1)  # h* = -de / ee: increasing de / ee is outermost first
        alpha = torch.gather(alpha, 1, order)
        colors = rgb[torch.gather(nearest, 1, order)]  # [t, k, 3]
        transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], 1), dim=1)
        w = alpha * transmittance
        total = w.sum(dim=1, keepdim=True)
        blended = (w[..., None] * colors).sum(dim=1) / total.clamp_min(1e-30)
        out[start:stop] = torch.where(total > 1e-6, blended, rgb[nearest[:, 0]])
    return out.numpy()


def _precision_terms(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """[N, 6] entries (xx, yy, zz, xy, xz, yz) of each Gaussian's ``Sigma^-1 = A A^T``, ``A = R diag(1 / s)``."""
    a = inverse_sqrt_covariances(quats, scales)
    full = a @ a.transpose(1, 2)
    return torch.stack([full[:, 0, 0], full[:, 1, 1], full[:, 2, 2], full[:, 0, 1], full[:, 0, 2], full[:, 1, 2]], 1)


def _quadratic(m: tuple[torch.Tensor, ...], u: tuple[torch.Tensor, ...], v: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``u^T Sigma^-1 v`` from the six precision entries ``m`` and the components of ``u`` and ``v`` (broadcast)."""
    return (m[0] * u[0] * v[0] + m[1] * u[1] * v[1] + m[2] * u[2] * v[2]
            + m[3] * (u[0] * v[1] + u[1] * v[0]) + m[4] * (u[0] * v[2] + u[2] * v[0])
            + m[5] * (u[1] * v[2] + u[2] * v[1]))


def bake_texture(
    uv_mesh: UVMesh,
    splats: Splats,
    method: BakeMethod = DEFAULT_BAKE_METHOD,
    min_opacity: float = DEFAULT_MIN_OPACITY,
    neighbors: int = DEFAULT_BAKE_NEIGHBORS,
    views: CameraBatch | None = None,
) -> BakedTexture:
    """A ``uv_mesh.size_px`` square texture of ``splats`` over ``uv_mesh``'s layout (the module docstring's steps).

    Args:
        uv_mesh: the unwrapped mesh (world frame).
        splats: the activated Gaussians the mesh was made from.
        method: ``"normal"`` or ``"views"``.
        min_opacity: Gaussians below this opacity are ignored (as by the mesher).
        neighbors: Gaussians traced per texel (``"normal"``).
        views: the cameras of ``"views"`` (default :func:`lucid_app.mesh.bake_views.bake_cameras`).

    Raises:
        MeshError: an unknown method, or no Gaussian at or above ``min_opacity``.
    """
    method = check_bake_method(method)
    size = uv_mesh.size_px
    texels = texel_samples(uv_mesh)
    if method == "views":
        from lucid_app.mesh.bake_views import colors_from_views

        colors, seen = colors_from_views(texels.points, texels.normals, uv_mesh.vertices, uv_mesh.faces, splats,
                                         cameras=views)
    else:
        means, quats, scales, opacities, rgb = visible_gaussians(splats, min_opacity)
        colors = colors_along_normals(texels.points, texels.normals, means, quats, scales, opacities, rgb, neighbors)
        seen = np.ones(len(colors), dtype=bool)
    used = np.zeros(size * size, dtype=bool)
    used[texels.index] = True
    known = np.zeros(size * size, dtype=bool)
    known[texels.index[seen]] = True
    image = np.zeros((size * size, 3))
    image[texels.index] = colors
    filled = fill_unused(image.reshape(size, size, 3), known.reshape(size, size))
    coverage = float(used.mean())
    unseen = float(1.0 - seen.mean()) if len(seen) else 0.0
    logger.info("bake (%s): %d x %d texture, %.1f%% in use, %.2f%% of it unseen", method, size, size,
                100.0 * coverage, 100.0 * unseen)
    return BakedTexture(image=np.round(np.clip(filled, 0.0, 1.0) * 255.0).astype(np.uint8),
                        used=used.reshape(size, size), coverage=coverage, unseen=unseen, method=method)
