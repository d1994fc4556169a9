"""A face budget's mesh put back on the Gaussians' surface, and the shells nobody can see dropped.

Why (measured, docs/BENCHMARKS.md "Textured mesh export"): a face budget is met with a coarser grid
(:mod:`lucid_app.mesh.surface`), whose half-voxel floor on the scales swells every Gaussian: at 2k faces the
20 000-Gaussian striped ball's iso-surface lay at radius 0.57-1.40 around Gaussians on the unit sphere (a swollen
outer shell and a shrunken inner one), and the car's silhouette matched the splats' at IoU 0.65. A texture baked on
such a surface samples the colour off the Gaussians. Two fixes, both keeping the mesh closed:

1. :func:`drop_cavities`: a closed component with negative signed volume bounds a cavity (marching cubes winds
   faces out of the dense side, so a hollow shell's inner surface faces inwards); it is inside another component,
   never seen from outside, and its faces are better spent on the outer surface.
2. :func:`snap_to_surface`: each vertex of the coarse mesh moves along its own normal onto the tangent plane of
   the nearest point of the fine surface (the extraction at the resolution asked for). Along the normal only, so
   neighbouring vertices keep their spacing across the surface (a move to the nearest point itself gathers
   vertices onto the fine surface's bumps and collapses faces); the connectivity is kept, so the mesh stays
   watertight.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

# Fine faces (nearest by centroid) searched for each vertex's nearest surface point.
SNAP_CANDIDATES = 16


def drop_cavities(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """``mesh`` without its closed components of negative signed volume (cavities, see the module docstring); the
    mesh unchanged when it has none, or nothing else."""
    parts = mesh.split(only_watertight=False)
    solid = [p for p in parts if not (p.is_watertight and p.volume < 0.0)]
    if len(solid) == len(parts) or not solid:
        return mesh
    return trimesh.util.concatenate(solid)


def nearest_surface_points(points: np.ndarray, surface: trimesh.Trimesh,
                           candidates: int = SNAP_CANDIDATES) -> np.ndarray:
    """[P, 3] the nearest point of ``surface`` to each of ``points`` [P, 3], among its ``candidates`` faces with the
    nearest centroids (exact point-to-triangle distances, ``trimesh.triangles.closest_point``)."""
    triangles = np.asarray(surface.triangles)
    k = max(1, min(candidates, len(triangles)))
    _, faces = cKDTree(triangles.mean(axis=1)).query(points, k=k, workers=-1)
    faces = np.asarray(faces).reshape(len(points), k)
    best = np.full(len(points), np.inf)
    out = np.array(points, dtype=np.float64)
    for j in range(k):
        closest = trimesh.triangles.closest_point(triangles[faces[:, j]], points)
        distance = np.linalg.norm(closest - points, axis=1)
        nearer = distance < best
        best[nearer], out[nearer] = distance[nearer], closest[nearer]
    return out


def snap_to_surface(mesh: trimesh.Trimesh, surface: trimesh.Trimesh) -> trimesh.Trimesh:
    """``mesh`` with each vertex ``v`` (unit vertex normal ``n``) moved to ``v + ((c - v) . n) n``, ``c`` the nearest
    point of ``surface`` (module docstring, step 2); faces and vertex order kept.

    Args:
        mesh: the coarse, closed mesh (world frame).
        surface: the fine surface of the same Gaussians.
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    offset = ((nearest_surface_points(vertices, surface) - vertices) * normals).sum(axis=1, keepdims=True)
    return trimesh.Trimesh(vertices + offset * normals, np.asarray(mesh.faces), process=False)
