"""The face budget's mesh put back on the fine surface, and cavities dropped (lucid_app/mesh/snap.py)."""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from lucid_app.config import OptimConfig
from lucid_app.mesh import mesh_from_splats
from lucid_app.mesh.snap import drop_cavities, nearest_surface_points, snap_to_surface
from lucid_app.render.base import Splats
from lucid_app.scene.gaussians import GaussianModel


def test_a_cavity_is_dropped_and_an_outer_shell_kept() -> None:
    outer = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    inner = trimesh.creation.icosphere(subdivisions=1, radius=0.5)
    inner.invert()  # a hollow's surface faces into the hollow: negative signed volume
    beside = trimesh.creation.icosphere(subdivisions=1, radius=0.3)
    beside.apply_translation([3.0, 0.0, 0.0])
    kept = drop_cavities(trimesh.util.concatenate([outer, inner, beside]))
    assert len(kept.faces) == len(outer.faces) + len(beside.faces)
    assert math.isclose(kept.volume, outer.volume + beside.volume, rel_tol=1e-9)
    assert drop_cavities(outer) is outer


def test_nearest_points_and_the_snap_along_the_normal_on_spheres() -> None:
    fine = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 3))
    points *= rng.uniform(0.5, 1.5, (200, 1)) / np.linalg.norm(points, axis=1, keepdims=True)
    nearest = nearest_surface_points(points, fine)
    # Against brute force over every face: the same distance (the nearest point can tie on a shared edge).
    triangles = np.asarray(fine.triangles)
    brute = np.array([np.linalg.norm(trimesh.triangles.closest_point(triangles, np.tile(p, (len(triangles), 1))) - p,
                                     axis=1).min() for p in points[:40]])
    np.testing.assert_allclose(np.linalg.norm(nearest[:40] - points[:40], axis=1), brute, atol=1e-9)
    # And near the closed form: the unit sphere's nearest point is the radial projection (within the facets).
    np.testing.assert_allclose(np.linalg.norm(nearest, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(nearest, points / np.linalg.norm(points, axis=1, keepdims=True), atol=2e-2)
    coarse = trimesh.creation.icosphere(subdivisions=1, radius=1.4)
    snapped = snap_to_surface(coarse, fine)
    np.testing.assert_allclose(np.linalg.norm(snapped.vertices, axis=1), 1.0, atol=2e-3)
    np.testing.assert_array_equal(snapped.faces, coarse.faces)
    assert snapped.is_watertight


def test_a_budgeted_mesh_of_a_hollow_shell_lies_on_its_fine_surface() -> None:
    """Gaussians on the unit sphere: the fine mesh is a thin shell around it; at a small face budget the coarse
    grid swells it (and makes a cavity), the snapped mesh has one closed outer surface near the fine one."""
    g = torch.Generator().manual_seed(0)
    points = torch.nn.functional.normalize(torch.randn(3000, 3, generator=g), dim=1)
    splats = GaussianModel.from_points(points, OptimConfig(), colors=torch.full((3000, 3), 0.5),
                                       opacity=0.98).splats()
    splats = Splats(*(t.detach() for t in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)))
    fine = mesh_from_splats(splats, resolution=64).mesh
    coarse = mesh_from_splats(splats, resolution=64, max_faces=600)
    assert len(coarse.mesh.faces) <= 600 and coarse.mesh.is_watertight and coarse.components_kept == 1
    assert coarse.mesh.volume > 0.0, "the outer surface, not a cavity"
    # The coarse grid's own surface (the same resolution, no budget: not snapped) lies far off the fine one.
    unsnapped = mesh_from_splats(splats, resolution=coarse.resolution).mesh
    tree = cKDTree(np.asarray(fine.vertices))
    distance, _ = tree.query(np.asarray(coarse.mesh.vertices))
    before, _ = tree.query(np.asarray(unsnapped.vertices))
    assert np.median(distance) < 0.04, "within a fine voxel (~0.04) of the fine surface"
    assert np.median(before) > 0.1
    np.testing.assert_array_equal(coarse.mesh.faces, unsnapped.faces)
