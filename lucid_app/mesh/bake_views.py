"""The ``"views"`` bake of :mod:`lucid_app.mesh.bake`: renders of the Gaussians projected onto the mesh's texels.

Steps (:func:`colors_from_views`):

1. Cameras (:func:`bake_cameras`): ``views_per_ring`` views on each ring of ``RING_POLAR_DEG`` around the
   mesh's bounding-box centre, far enough that its bounding sphere fills the frame; rings alternate by half a
   step in azimuth.
2. Each view: the Gaussians rendered with our torch renderer on black (straight colour = rgb / alpha), and the
   mesh's own z-buffer (:mod:`lucid_app.mesh.raster`).
3. Each texel point projected into the view is visible when it lies in the frame and no farther than the
   z-buffer's depth at its pixel plus ``DEPTH_TOLERANCE_PX`` pixel footprints; it takes the render's colour there
   (bilinear) with weight ``alpha * cos^VIEW_WEIGHT_POWER`` (cos: between its normal and the direction to the
   camera; back-facing views weigh 0).
4. Colour = the weighted mean over views; texels no view saw are reported (``seen`` False) and left to the fill.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from lucid_app.mesh.raster import camera_fragments, project, sample_bilinear
from lucid_app.render.base import Renderer, Splats
from lucid_app.render.cameras import CameraBatch, orbit_cameras

logger = logging.getLogger(__name__)

RING_POLAR_DEG = (20.0, 55.0, 90.0, 125.0, 160.0)
DEFAULT_VIEWS_PER_RING = 6
DEFAULT_VIEW_SIZE_PX = 256
VIEW_FOVY_RAD = 0.6
FRAME_MARGIN = 1.05
DEPTH_TOLERANCE_PX = 2.0
VIEW_WEIGHT_POWER = 4.0
RENDER_BATCH = 4


def bake_cameras(vertices: np.ndarray, views_per_ring: int = DEFAULT_VIEWS_PER_RING,
                 size_px: int = DEFAULT_VIEW_SIZE_PX) -> CameraBatch:
    """Step 1: ``len(RING_POLAR_DEG) * views_per_ring`` square cameras around the mesh ``vertices`` [V, 3]."""
    vertices = np.asarray(vertices, np.float64)
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    distance = FRAME_MARGIN * radius / math.sin(0.5 * VIEW_FOVY_RAD)
    azimuth, polar = [], []
    for ring, polar_deg in enumerate(RING_POLAR_DEG):
        step = 360.0 / views_per_ring
        azimuth += [((i + 0.5 * (ring % 2)) * step + 180.0) % 360.0 - 180.0 for i in range(views_per_ring)]
        polar += [polar_deg] * views_per_ring
    count = len(azimuth)
    offset = torch.tensor(centre, dtype=torch.float32).expand(count, 3)
    return orbit_cameras(torch.tensor(azimuth), torch.tensor(polar), torch.full((count,), distance),
                         torch.full((count,), VIEW_FOVY_RAD), size_px, size_px, targets=offset.clone(),
                         eye_offsets=offset.clone())


def colors_from_views(
    points: np.ndarray,
    normals: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    splats: Splats,
    renderer: Renderer | None = None,
    cameras: CameraBatch | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Colours of the surface ``points`` [T, 3] (unit ``normals`` [T, 3]) from renders of ``splats``.

    Args:
        points, normals: the texels' surface points and outward normals (world frame).
        vertices, faces: the mesh ([V, 3], [F, 3]) whose z-buffer decides visibility.
        splats: the Gaussians to render.
        renderer: default our torch renderer on the CPU.
        cameras: default :func:`bake_cameras` of ``vertices``.

    Returns:
        (colours [T, 3] float32 in [0, 1], seen [T] bool: at least one view saw the point).
    """
    from lucid_app.render.torch_ref import TorchRenderer

    renderer = renderer or TorchRenderer()
    cameras = cameras if cameras is not None else bake_cameras(vertices)
    points = np.asarray(points, np.float64)
    normals = np.asarray(normals, np.float64)
    total = np.zeros((len(points), 3))
    weight = np.zeros(len(points))
    centers = cameras.centers.double().numpy()
    for start in range(0, len(cameras), RENDER_BATCH):
        batch = cameras[start:start + RENDER_BATCH]
        with torch.no_grad():
            out = renderer.render(splats, batch, torch.zeros(len(batch), 3, dtype=splats.means.dtype))
        alpha = out.alpha[..., 0].double().cpu().numpy()
        straight = out.rgb.double().cpu().numpy() / np.maximum(alpha, 1e-6)[..., None]
        for i in range(len(batch)):
            index = start + i
            colour, w = _one_view(points, normals, vertices, faces, cameras, index, centers[index], straight[i],
                                  alpha[i])
            total += w[:, None] * colour
            weight += w
    seen = weight > 0
    colors = np.where(seen[:, None], total / np.maximum(weight, 1e-30)[:, None], 0.0)
    logger.info("views bake: %d views, %.2f%% of the texels unseen", len(cameras), 100.0 * (1.0 - seen.mean()))
    return np.clip(colors, 0.0, 1.0).astype(np.float32), seen


def _one_view(points: np.ndarray, normals: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
              cameras: CameraBatch, index: int, center: np.ndarray, straight: np.ndarray,
              alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-3 for one view: each point's colour [T, 3] in it and its weight [T] (0 where not seen)."""
    width, height = cameras.width, cameras.height
    zbuffer = np.full(width * height, np.inf)
    frags = camera_fragments(vertices, faces, cameras, index)
    zbuffer[frags.pixel] = frags.depth
    K = cameras.Ks[index].double().numpy()
    xy, z = project(points, cameras.viewmats[index].double().numpy(), K)
    col, row = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    inside = (z > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    pixel = np.where(inside, row * width + col, 0)
    tolerance = DEPTH_TOLERANCE_PX * z / K[0, 0]
    visible = inside & (z <= zbuffer[pixel] + tolerance)
    to_camera = center - points
    cos = (normals * to_camera).sum(axis=1) / np.maximum(np.linalg.norm(to_camera, axis=1), 1e-30)
    uv = np.stack([xy[:, 0] / width, 1.0 - xy[:, 1] / height], axis=1)
    a = sample_bilinear(alpha[..., None], uv)[:, 0]
    w = np.where(visible & (cos > 0), a * np.clip(cos, 0.0, 1.0) ** VIEW_WEIGHT_POWER, 0.0)
    return sample_bilinear(straight, uv), w
