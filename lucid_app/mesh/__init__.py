"""Gaussians -> density grid -> marching cubes -> coloured, upright ``.glb`` / ``.obj`` (DESIGN §2).

Steps (:func:`mesh_from_splats`):

1. Keep the Gaussians with opacity >= ``min_opacity``; the grid covers their centres +- ``cutoff_sigma`` times
   their largest standard deviation, with cubic voxels, ``resolution`` samples along the longest side. Scales
   below half a voxel are raised to half a voxel, so thin (flat) Gaussians cannot fall between the samples.
2. Evaluate the opacity-weighted density ``D(x) = sum_i o_i exp(-1/2 (x - mu_i)^T Sigma_i^-1 (x - mu_i))`` on
   the grid (:func:`density_grid`), each Gaussian truncated at ``cutoff_sigma`` Mahalanobis radius.
3. Marching cubes at ``D = iso`` (scikit-image) on the grid padded with one layer of zeros, so every surface
   is closed (watertight).
4. Drop cavities (closed components bounding a hollow inside another, :func:`lucid_app.mesh.snap.drop_cavities`)
   and floaters: connected components with fewer than ``min_component_fraction`` of the largest one's faces.
5. Optionally meet a face budget with a coarser grid (steps 1-4 again at the largest resolution that fits, see
   ``_fit_face_budget``), not by decimating the mesh: the surface stays closed (watertight) and in one piece where
   it was. The coarse grid's surface is swollen (the scales' half-voxel floor), so its vertices are then moved
   along their normals onto the fine surface of step 3 (:func:`lucid_app.mesh.snap.snap_to_surface`).
6. Vertex colours from the Gaussians' band-0 colour, weighted by each one's density contribution at the vertex
   over its ``color_neighbors`` nearest centres (scipy ``cKDTree``), see :func:`vertex_colors`.

The steps live in :mod:`lucid_app.mesh.density` (1-2: the grid and the density splatted on it, and why it is splatted
per Gaussian), :mod:`lucid_app.mesh.surface` (3-6, and :func:`mesh_from_splats`, which runs them all),
:mod:`lucid_app.mesh.snap` (4-5's cavities and snapping) and :mod:`lucid_app.mesh.write` (the upright ``.glb`` /
``.obj``).

The textured export (issue 26) adds: :mod:`lucid_app.mesh.uv` (xatlas charts and packing, seams),
:mod:`lucid_app.mesh.raster` (a CPU triangle rasteriser: texels in UV space, z-buffered camera renders),
:mod:`lucid_app.mesh.bake` (each texel's surface point and its colour from the Gaussians; why along the normal),
:mod:`lucid_app.mesh.bake_views` (the measured alternative: projected renders), :mod:`lucid_app.mesh.fill` (the
padding), :mod:`lucid_app.mesh.textured` (unwrap + bake as one value and its figures) and
:mod:`lucid_app.mesh.write_textured` (``.glb`` with ``baseColorTexture``, or ``.obj`` + ``.mtl`` + ``.png``).

This package writes files (``write_mesh``, ``write_textured_mesh``, ``write_mesh_files``), as does the end-of-run
export (:mod:`lucid_app.train.export_run`);
everything else here is pure. Import from here: it re-exports the public names of density, surface and write, and
the textured export's entry points.
"""

from __future__ import annotations

from lucid_app.mesh.density import (
    DEFAULT_CUTOFF_SIGMA,
    DEFAULT_RESOLUTION,
    GRID_MARGIN,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    PAIRS_PER_CHUNK,
    SHARED_HALF_WIDTH,
    Grid,
    MeshError,
    check_resolution,
    density_grid,
    grid_for,
    inverse_sqrt_covariances,
)
from lucid_app.mesh.surface import (
    DEFAULT_COLOR_NEIGHBORS,
    DEFAULT_ISO,
    DEFAULT_MIN_COMPONENT_FRACTION,
    DEFAULT_MIN_OPACITY,
    MeshResult,
    marching_cubes,
    mesh_from_splats,
    remove_floaters,
    vertex_colors,
)
from lucid_app.mesh.textured import TexturedMesh, texture_mesh
from lucid_app.mesh.write import MESH_FORMATS, Z_UP_TO_Y_UP, to_y_up, write_mesh
from lucid_app.mesh.write_textured import write_mesh_files, write_textured_mesh

__all__ = [
    "DEFAULT_COLOR_NEIGHBORS",
    "DEFAULT_CUTOFF_SIGMA",
    "DEFAULT_ISO",
    "DEFAULT_MIN_COMPONENT_FRACTION",
    "DEFAULT_MIN_OPACITY",
    "DEFAULT_RESOLUTION",
    "GRID_MARGIN",
    "MAX_RESOLUTION",
    "MESH_FORMATS",
    "MIN_RESOLUTION",
    "PAIRS_PER_CHUNK",
    "SHARED_HALF_WIDTH",
    "Z_UP_TO_Y_UP",
    "Grid",
    "MeshError",
    "MeshResult",
    "TexturedMesh",
    "check_resolution",
    "density_grid",
    "grid_for",
    "inverse_sqrt_covariances",
    "marching_cubes",
    "mesh_from_splats",
    "remove_floaters",
    "texture_mesh",
    "to_y_up",
    "vertex_colors",
    "write_mesh",
    "write_mesh_files",
    "write_textured_mesh",
]
