"""Steps 3-6 of :mod:`lucid_app.mesh`: density grid -> closed surface -> floaters dropped -> face budget -> colours.

:func:`mesh_from_splats` runs every step; the density (steps 1-2) is :mod:`lucid_app.mesh.density`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from lucid_app.mesh.density import (
    DEFAULT_CUTOFF_SIGMA,
    DEFAULT_RESOLUTION,
    GRID_MARGIN,
    MIN_RESOLUTION,
    Grid,
    MeshError,
    check_resolution,
    density_grid,
    grid_for,
    inverse_sqrt_covariances,
)
from lucid_app.mesh.snap import drop_cavities, snap_to_surface
from lucid_app.render.base import Splats
from lucid_app.scene.gaussians import sh_dc_to_rgb

logger = logging.getLogger(__name__)

DEFAULT_ISO = 0.5
DEFAULT_MIN_OPACITY = 0.005
DEFAULT_MIN_COMPONENT_FRACTION = 0.05
DEFAULT_COLOR_NEIGHBORS = 16
COLOR_CHUNK = 1 << 16  # vertices per chunk of the colour look-up
# A face budget's search for the grid resolution (``_fit_face_budget``): proportional guesses, then bisection.
FIT_GUESSES = 3
FIT_MAX_TRIES = 16


@dataclass
class MeshResult:
    """A mesh in the project's world frame (z up) with RGBA vertex colours, and what its extraction kept.

    Attributes:
        mesh: the ``trimesh.Trimesh`` (vertex colours uint8 [V, 4]).
        components_kept: connected components kept after the floater filter.
        components_found: connected components out of marching cubes.
        grid: the density grid's geometry.
        resolution: the grid resolution used (below the one asked for when a face budget needed a coarser grid).
    """

    mesh: trimesh.Trimesh
    components_kept: int
    components_found: int
    grid: Grid
    resolution: int = 0


def marching_cubes(density: torch.Tensor, grid: Grid, iso: float) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface ``density = iso`` as world-space vertices [V, 3] (float64) and faces [F, 3] (int64).

    The grid is padded with a layer of zeros first, so surfaces touching its border are closed too; faces are
    wound so that normals point out of the dense side (positive volume).
    """
    from skimage.measure import marching_cubes as skimage_marching_cubes

    volume = np.pad(density.numpy(), 1, mode="constant", constant_values=0.0)
    peak = float(volume.max())
    if not peak > iso:
        raise MeshError(
            f"the Gaussians' density peaks at {peak:.4g}, not above the iso-level {iso:g}: nothing to mesh "
            "(lower the iso-level)"
        )
    verts, faces, _, _ = skimage_marching_cubes(volume, level=float(iso), allow_degenerate=False)
    # skimage winds faces for a surface around *low* values by default ("descent"); flip for our dense inside.
    faces = faces[:, ::-1]
    verts = grid.origin + (verts.astype(np.float64) - 1.0) * grid.voxel_size
    return verts, np.ascontiguousarray(faces, dtype=np.int64)


def remove_floaters(mesh: trimesh.Trimesh, min_fraction: float) -> tuple[trimesh.Trimesh, int, int]:
    """Keep the connected components with at least ``min_fraction`` of the largest one's faces.

    Returns:
        (mesh of the kept components, components kept, components found).
    """
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh, len(parts), len(parts)
    largest = max(len(p.faces) for p in parts)
    kept = [p for p in parts if len(p.faces) >= min_fraction * largest]
    return trimesh.util.concatenate(kept), len(kept), len(parts)


def vertex_colors(
    vertices: np.ndarray,
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    rgb: torch.Tensor,
    neighbors: int = DEFAULT_COLOR_NEIGHBORS,
) -> np.ndarray:
    """Colour of each vertex: the Gaussians' colours weighted by their density contribution there.

    ``c(x) = sum_i w_i c_i / sum_i w_i`` with ``w_i = o_i exp(-1/2 d^T Sigma_i^-1 d)`` over the ``neighbors``
    nearest centres (cKDTree); where every weight underflows, the nearest Gaussian's colour.

    Args:
        vertices: [V, 3] world positions.
        means, quats, scales, opacities: the Gaussians ([N, 3], [N, 4], [N, 3], [N]).
        rgb: [N, 3] colours in [0, 1].
        neighbors: Gaussians considered per vertex (clamped to N).

    Returns:
        [V, 3] float32 colours in [0, 1].
    """
    k = max(1, min(int(neighbors), means.shape[0]))
    means = means.detach().float().cpu()
    _, nearest_all = cKDTree(means.double().numpy()).query(np.asarray(vertices, np.float64), k=k)
    nearest_all = torch.as_tensor(np.asarray(nearest_all).reshape(len(vertices), k))
    inv = inverse_sqrt_covariances(quats.detach().float().cpu(), scales.detach().float().cpu())
    opacities = opacities.detach().float().cpu()
    rgb = rgb.detach().float().cpu().clamp(0.0, 1.0)
    verts = torch.as_tensor(np.asarray(vertices), dtype=torch.float32)
    out = torch.empty(len(verts), 3)
    for start in range(0, len(verts), COLOR_CHUNK):
        nearest = nearest_all[start:start + COLOR_CHUNK]  # [V, k]
        d = verts[start:start + COLOR_CHUNK, None, :] - means[nearest]
        q = torch.einsum("vki,vkij->vkj", d, inv[nearest]).square().sum(dim=-1)  # [V, k]
        w = opacities[nearest] * torch.exp(-0.5 * q)
        colors = rgb[nearest]  # [V, k, 3]
        total = w.sum(dim=1, keepdim=True)
        blended = (w[..., None] * colors).sum(dim=1) / total.clamp(min=1e-30)
        out[start:start + COLOR_CHUNK] = torch.where(total > 1e-30, blended, colors[:, 0])
    return out.numpy()


def mesh_from_splats(
    splats: Splats,
    resolution: int = DEFAULT_RESOLUTION,
    iso: float = DEFAULT_ISO,
    max_faces: int | None = None,
    min_opacity: float = DEFAULT_MIN_OPACITY,
    min_component_fraction: float = DEFAULT_MIN_COMPONENT_FRACTION,
    cutoff_sigma: float = DEFAULT_CUTOFF_SIGMA,
    color_neighbors: int = DEFAULT_COLOR_NEIGHBORS,
    progress: Callable[[int], None] | None = None,
) -> MeshResult:
    """A coloured surface mesh of Gaussians (the module docstring lists the steps), in the world frame.

    Args:
        splats: activated Gaussians (``GaussianModel.splats()``); colours from the SH band 0 only, the colour
            averaged over view directions.
        resolution: grid samples along the longest side of the object's bounds (8..512).
        iso: density level of the surface (a lone Gaussian of opacity o reaches o at its centre).
        max_faces: at most this many faces, met by lowering the grid resolution (``MeshResult.resolution`` is the
            one used); None keeps ``resolution``.
        min_opacity: Gaussians below this opacity are ignored.
        min_component_fraction: components with fewer faces than this fraction of the largest are dropped.
        cutoff_sigma: each Gaussian is truncated at this Mahalanobis radius.
        color_neighbors: nearest Gaussians blended per vertex colour.
        progress: called with the number of Gaussians splatted after each chunk (total: the visible ones).

    Raises:
        MeshError: no Gaussians, none at or above ``min_opacity``, the density never exceeds ``iso``, no grid
            meets ``max_faces``, or bad options.
    """
    if splats.count == 0:
        raise MeshError("the file holds no Gaussians: nothing to mesh")
    if not iso > 0.0:
        raise MeshError(f"the iso-level must be positive, got {iso}")
    if max_faces is not None and max_faces < 4:
        raise MeshError(f"the face budget must be at least 4, got {max_faces}")
    means, quats, scales, opacities, rgb = visible_gaussians(splats, min_opacity)

    def surface(grid_resolution: int, report: Callable[[int], None] | None) -> _Surface:
        grid = grid_for(means, cutoff_sigma * scales.amax(dim=1), grid_resolution)
        # Thinner than half a voxel, a (flat) Gaussian could fall between the samples and vanish from the surface.
        clamped = scales.clamp(min=0.5 * grid.voxel_size)
        logger.info("density of %d Gaussians on a %s grid (voxel %.4g)", means.shape[0], grid.shape, grid.voxel_size)
        density = density_grid(means, quats, clamped, opacities, grid, cutoff_sigma, progress=report)
        verts, faces = marching_cubes(density, grid, iso)
        del density
        closed = drop_cavities(trimesh.Trimesh(verts, faces, process=True))
        mesh, kept, found = remove_floaters(closed, min_component_fraction)
        return _Surface(mesh, kept, found, grid, grid_resolution, clamped)

    result = surface(check_resolution(resolution), progress)
    if max_faces is not None and len(result.mesh.faces) > max_faces:
        fine = result
        result = _fit_face_budget(surface, fine, max_faces)
        # The coarse grid's swollen surface put back on the fine one; colours at the fine extraction's scales.
        result = replace(result, mesh=snap_to_surface(result.mesh, fine.mesh), scales=fine.scales)
    mesh = _colored(result, means, quats, opacities, rgb, color_neighbors)
    logger.info("mesh: %d vertices, %d faces, %d of %d components kept (grid resolution %d)", len(mesh.vertices),
                len(mesh.faces), result.kept, result.found, result.resolution)
    return MeshResult(mesh=mesh, components_kept=result.kept, components_found=result.found, grid=result.grid,
                      resolution=result.resolution)


def visible_gaussians(splats: Splats, min_opacity: float) -> tuple[torch.Tensor, ...]:
    """Means [N, 3], quats [N, 4], scales [N, 3], opacities [N] and band-0 colours [N, 3] of the Gaussians with
    opacity >= ``min_opacity``, float32 on the CPU.

    Raises:
        MeshError: none is that opaque.
    """
    opacities = splats.opacities.detach().float().cpu()
    visible = opacities >= min_opacity
    if not bool(visible.any()):
        raise MeshError(
            f"all {splats.count} Gaussians are transparent (highest opacity {float(opacities.max()):.3g}, "
            f"below {min_opacity:g}): nothing to mesh"
        )
    means = splats.means.detach().float().cpu()[visible]
    quats = splats.quats.detach().float().cpu()[visible]
    scales = splats.scales.detach().float().cpu()[visible]
    opacities = opacities[visible]
    rgb = sh_dc_to_rgb(splats.sh.detach().float().cpu()[visible, 0])
    return means, quats, scales, opacities, rgb


def _colored(result: _Surface, means: torch.Tensor, quats: torch.Tensor, opacities: torch.Tensor, rgb: torch.Tensor,
             neighbors: int) -> trimesh.Trimesh:
    """The extraction's mesh with RGBA vertex colours (uint8) from :func:`vertex_colors` at its clamped scales."""
    verts, faces = np.asarray(result.mesh.vertices), np.asarray(result.mesh.faces)
    colors = vertex_colors(verts, means, quats, result.scales, opacities, rgb, neighbors)
    rgba = np.concatenate([np.round(colors * 255.0), np.full((len(verts), 1), 255.0)], axis=1).astype(np.uint8)
    return trimesh.Trimesh(verts, faces, vertex_colors=rgba, process=False)


@dataclass(frozen=True)
class _Surface:
    """One extraction: the mesh after the floater filter, its components, grid, resolution and clamped scales."""

    mesh: trimesh.Trimesh
    kept: int
    found: int
    grid: Grid
    resolution: int
    scales: torch.Tensor


def _fit_face_budget(surface: Callable[[int, Callable[[int], None] | None], _Surface], first: _Surface,
                     max_faces: int) -> _Surface:
    """The extraction at the largest grid resolution whose mesh has at most ``max_faces`` faces.

    A face budget is met by a coarser grid, never by decimating the mesh: every marching-cubes surface of the padded
    grid is closed, so the result stays watertight (quadric decimation tore thin parts open into many pieces). Faces
    grow about as the square of the object's span in voxels (``resolution - 1 - 2 * GRID_MARGIN``), so each try
    scales the span by ``sqrt(max_faces / faces)``, within the bracket of resolutions already tried; after
    ``FIT_GUESSES`` such guesses the bracket is bisected.

    Raises:
        MeshError: even the coarsest grid (``MIN_RESOLUTION``) gives more than ``max_faces`` faces.
    """
    over, within, best = first.resolution, MIN_RESOLUTION - 1, None
    current = first
    for attempt in range(FIT_MAX_TRIES):
        if over - within <= 1:
            break
        faces = max(1, len(current.mesh.faces))
        span = current.resolution - 1 - 2 * GRID_MARGIN
        if attempt < FIT_GUESSES:
            guess = round(1 + 2 * GRID_MARGIN + span * math.sqrt(max_faces / faces))
        else:
            guess = (over + within) // 2
        resolution = min(max(guess, within + 1), over - 1)
        try:
            current = surface(resolution, None)
        except MeshError as err:  # so coarse that the surface vanished: only finer grids are worth a try
            logger.info("grid resolution %d: %s", resolution, err)
            within = resolution
            continue
        if len(current.mesh.faces) <= max_faces:
            within, best = current.resolution, current
        else:
            over = current.resolution
    if best is None:
        raise MeshError(
            f"no watertight mesh of these Gaussians has at most {max_faces} faces (the coarsest grid that shows "
            f"the surface, {over} samples, gives {len(current.mesh.faces)}): ask for more faces"
        )
    logger.info("face budget %d: grid resolution %d instead of %d (%d faces)", max_faces, best.resolution,
                first.resolution, len(best.mesh.faces))
    return best
