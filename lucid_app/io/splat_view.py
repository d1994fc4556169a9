"""A copy of a run's Gaussians framed for the app's splat viewer (``model_view.ply``; ``model.ply`` stays as trained).

Gradio's ``Model3D`` shows a ``.ply`` with gsplat.js, whose orbit camera always looks at the origin from 5 units
away, with a focal length of 1132 px and the y axis pointing *down* (the COLMAP convention of the 3DGS captures it was
made for); it takes no camera settings. Our world is z-up with the front on +y (``cameras.py``), so the raw model
shows on its side, off-centre and, with a few stray Gaussians, as a zoomed-in smudge. :func:`framed_for_viewer`
moves the Gaussians into the viewer's frame instead (a pure function, written by ``trainer.export``):

1. Centre: the middle of the 2nd–98th percentile box of the visible Gaussians' means (opacity ≥ 0.1; all of them if
   none is), so stray Gaussians do not move the object out of view.
2. Scale: the 95th percentile of how far they reach from the centre (distance plus two standard deviations along
   their largest axis) becomes :data:`VIEW_RADIUS`: the viewer's default camera then sees the object fill most of a
   420 px high panel.
3. Rotation into the viewer's axes, X = −x, Y = −z, Z = −y (a proper rotation, det +1): up is −Y, and the
   viewer's starting camera (on the −Z side) faces the object's front. Means, rotations and scales move with it;
   SH bands above 0 are not rotated (view-dependent colour of a preview only; the demo trains degree 0).

Before all that, a nearly transparent model is exposed (:func:`exposed_opacities`). An opacity reset (3DGS: every
opacity clamped to 0.01, the demo's step 300) leaves the Gaussians barely visible for tens of steps; gsplat.js draws
them over black, so a run stopped then showed a black canvas, and so did reopening it (issue 27: the splat viewer was
blank after a Stop). The copy's opacities are raised, α' = 1 − (1 − α)^k with one k ≥ 1 for all, until the
:data:`EXPOSE_QUANTILE` quantile reaches :data:`EXPOSED_OPACITY` (k = 1, no change, for a model already that
opaque): their order is kept and the shape shows. ``model.ply`` keeps the trained opacities.
"""

from __future__ import annotations

import numpy as np

from lucid_app.io.ply import GaussianPly

VIEW_RADIUS = 0.7
REACH_SIGMAS = 2.0
VISIBLE_OPACITY = 0.1
EXPOSE_QUANTILE = 90.0
EXPOSED_OPACITY = 0.5
# Rotation from our world (z-up, front +y) to gsplat.js's frame (y-down, camera starting on −z): row i = new axis i.
TO_VIEWER = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])
# The same rotation as a (w, x, y, z) quaternion: 180° about the axis (0, 1, −1)/√2.
TO_VIEWER_QUAT = np.array([0.0, 0.0, 1.0, -1.0]) / np.sqrt(2.0)


def frame_of(ply: GaussianPly) -> tuple[np.ndarray, float]:
    """(centre [3], scale factor) that put the visible Gaussians at the origin with radius :data:`VIEW_RADIUS`."""
    if ply.count == 0:
        return np.zeros(3), 1.0
    visible = 1.0 / (1.0 + np.exp(-ply.opacity_logits.astype(np.float64))) >= VISIBLE_OPACITY
    if not visible.any():
        visible = np.ones(ply.count, dtype=bool)
    means = ply.means[visible].astype(np.float64)
    low, high = np.percentile(means, 2, axis=0), np.percentile(means, 98, axis=0)
    centre = (low + high) / 2.0
    sigma = np.exp(ply.log_scales[visible].astype(np.float64)).max(axis=1)
    radius = float(np.percentile(np.linalg.norm(means - centre, axis=1) + REACH_SIGMAS * sigma, 95))
    return centre, VIEW_RADIUS / radius if radius > 1e-8 else 1.0


def exposed_opacities(opacity_logits: np.ndarray) -> np.ndarray:
    """Opacity logits [N] raised so that their :data:`EXPOSE_QUANTILE` quantile is at least :data:`EXPOSED_OPACITY`
    (module docstring): α' = 1 − (1 − α)^k, k = max(1, log(1 − target) / log(1 − α_q)). Unchanged when the model is
    that opaque already."""
    if opacity_logits.size == 0:
        return opacity_logits
    logits = opacity_logits.astype(np.float64)
    # log(1 − α) = −softplus(logit), computed stably: 1 − α underflows for opaque Gaussians.
    log_clear = -np.logaddexp(0.0, logits)
    quantile = float(np.percentile(log_clear, 100.0 - EXPOSE_QUANTILE))  # (1 − α)'s low end is α's high end
    target = np.log1p(-EXPOSED_OPACITY)
    k = max(1.0, target / quantile) if quantile < 0.0 else 1.0
    # α' = 1 − exp(k·log(1 − α)); logit(α') = log(α') − log(1 − α').
    log_clear_k = k * log_clear
    return (np.log(-np.expm1(log_clear_k)) - log_clear_k).astype(opacity_logits.dtype)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products a ⊗ b of (w, x, y, z) quaternions [..., 4] (broadcast)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def framed_for_viewer(ply: GaussianPly) -> GaussianPly:
    """``ply`` exposed, centred, scaled to :data:`VIEW_RADIUS` and rotated into gsplat.js's axes (module
    docstring)."""
    ply = GaussianPly(means=ply.means, sh_dc=ply.sh_dc, sh_rest=ply.sh_rest,
                      opacity_logits=exposed_opacities(ply.opacity_logits), log_scales=ply.log_scales, quats=ply.quats)
    centre, scale = frame_of(ply)
    means = ((ply.means.astype(np.float64) - centre) * scale) @ TO_VIEWER.T
    quats = quat_multiply(TO_VIEWER_QUAT, ply.quats.astype(np.float64))
    return GaussianPly(
        means=means.astype(np.float32), sh_dc=ply.sh_dc, sh_rest=ply.sh_rest, opacity_logits=ply.opacity_logits,
        log_scales=(ply.log_scales + np.float32(np.log(scale))).astype(np.float32), quats=quats.astype(np.float32),
    )


__all__ = ["EXPOSED_OPACITY", "TO_VIEWER", "TO_VIEWER_QUAT", "VIEW_RADIUS", "exposed_opacities", "frame_of",
           "framed_for_viewer", "quat_multiply"]
