"""EWA projection of 3D Gaussians into pinhole views (step 1 of :mod:`lucid_app.render.torch_ref`'s algorithm), with
the constants every backend shares (the near plane, the 3DGS low-pass filter, the field-of-view clamp)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lucid_app.render.base import Splats

NEAR_PLANE = 0.01
LOWPASS_PX2 = 0.3
FOV_CLAMP = 1.3


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """[..., 4] (w, x, y, z) quaternions, any norm -> [..., 3, 3] rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


@dataclass
class Projection:
    """Per (view, Gaussian) screen-space quantities.

    Attributes:
        means2d: [C, N, 2] pixel coordinates of the projected means (differentiable).
        conics: [C, N, 3] (a, b, c) with inverse 2D covariance [[a, b], [b, c]] (differentiable).
        depths: [C, N] camera-space z (differentiable).
        radii: [C, N] int32, ceil(3 sqrt(largest eigenvalue)), 0 behind the near plane.
        reach_sq: [N] ``2 ln(255 o)``: alpha >= 1/255 only where the squared Mahalanobis distance is below it.
        extents: [C, N, 2] half-widths in px of the box where alpha can reach 1/255 (no gradient).
        in_front: [C, N] bool, z > near plane and a valid covariance.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    reach_sq: torch.Tensor
    extents: torch.Tensor
    in_front: torch.Tensor


def project_gaussians(splats: Splats, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int) -> Projection:
    """EWA projection of every Gaussian into every view (step 1 of the module docstring).

    Args:
        splats: N activated Gaussians.
        viewmats: [C, 4, 4] world-to-camera; Ks: [C, 3, 3] intrinsics (same dtype as the splats).
        width, height: image size in pixels.
    """
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    p_cam = torch.einsum("cij,nj->cni", rot, splats.means) + trans[:, None]
    x, y, z = p_cam.unbind(-1)
    in_front = z > NEAR_PLANE
    z_safe = torch.where(in_front, z, torch.ones_like(z))  # keeps culled entries finite in the backward
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    u, v = x / z_safe, y / z_safe
    means2d = torch.stack([fx * u + cx, fy * v + cy], dim=-1)

    margin_x, margin_y = (FOV_CLAMP - 1.0) * 0.5 * width / fx, (FOV_CLAMP - 1.0) * 0.5 * height / fy
    u_c = torch.maximum(torch.minimum(u, (width - cx) / fx + margin_x), -cx / fx - margin_x)
    v_c = torch.maximum(torch.minimum(v, (height - cy) / fy + margin_y), -cy / fy - margin_y)
    # Rows of J @ (W R S): the camera-frame covariance factor projected to the image plane, [C, N, 3] each.
    rs_cam = torch.einsum("cij,njk->cnik", rot, quat_to_rotmat(splats.quats) * splats.scales[:, None, :])
    row_x = (fx / z_safe)[..., None] * (rs_cam[..., 0, :] - u_c[..., None] * rs_cam[..., 2, :])
    row_y = (fy / z_safe)[..., None] * (rs_cam[..., 1, :] - v_c[..., None] * rs_cam[..., 2, :])
    sxx = (row_x * row_x).sum(-1) + LOWPASS_PX2
    syy = (row_y * row_y).sum(-1) + LOWPASS_PX2
    sxy = (row_x * row_y).sum(-1)
    det = sxx * syy - sxy * sxy
    in_front = in_front & (det > 0)
    det_safe = torch.where(in_front, det, torch.ones_like(det))
    conics = torch.stack([syy / det_safe, -sxy / det_safe, sxx / det_safe], dim=-1)

    with torch.no_grad():
        mid = 0.5 * (sxx + syy)
        lam_max = mid + (mid * mid - det).clamp_min(0.0).sqrt()
        radii = torch.where(in_front, torch.ceil(3.0 * lam_max.sqrt()), torch.zeros_like(lam_max)).int()
        reach_sq = (2.0 * torch.log(255.0 * splats.opacities.detach().clamp_min(1e-30))).clamp_min(0.0)
        extents = reach_sq.sqrt()[None, :, None] * torch.stack([sxx, syy], dim=-1).sqrt()
    return Projection(means2d, conics, z, radii, reach_sq, extents, in_front)
