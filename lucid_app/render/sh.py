"""Real spherical harmonics up to degree 3, in the layout and sign convention of 3D Gaussian Splatting.

Coefficients are stored per Gaussian as ``sh [N, K, 3]`` with ``K = (degree + 1) ** 2``; index ``l * l + l + m``
holds band ``l``, order ``m`` (m = -l..l). The basis is the orthonormal real SH basis on the unit sphere with
the signs the INRIA 3DGS code uses (so ``.ply`` files from other tools render the same):

    band 0:  C0
    band 1:  -C1 y,  C1 z,  -C1 x
    band 2:  C2a xy,  C2b yz,  C2c (2z^2 - x^2 - y^2),  C2b xz,  C2d (x^2 - y^2)
    band 3:  C3a y (3x^2 - y^2),  C3b xyz,  C3c y (4z^2 - x^2 - y^2),  C3d z (2z^2 - 3x^2 - 3y^2),
             C3c x (4z^2 - x^2 - y^2),  C3e z (x^2 - y^2),  C3a x (x^2 - 3y^2)

with the normalisation constants below (some carry a minus sign). The colour is ``SH(d) + 0.5`` clamped at 0,
where ``d`` is the unit direction from the camera centre to the Gaussian's mean (as 3DGS does).
"""

from __future__ import annotations

import math

import torch

MAX_SH_DEGREE = 3

# Normalisation constants of the real SH basis: sqrt((2l + 1) / (4 pi) * (l - |m|)! / (l + |m|)!) times the
# factor of the Legendre polynomial, with the signs of the 3DGS convention folded in.
SH_C0 = 0.5 / math.sqrt(math.pi)
SH_C1 = math.sqrt(3.0 / (4.0 * math.pi))
SH_C2 = (
    0.5 * math.sqrt(15.0 / math.pi),
    -0.5 * math.sqrt(15.0 / math.pi),
    0.25 * math.sqrt(5.0 / math.pi),
    -0.5 * math.sqrt(15.0 / math.pi),
    0.25 * math.sqrt(15.0 / math.pi),
)
SH_C3 = (
    -0.25 * math.sqrt(35.0 / (2.0 * math.pi)),
    0.5 * math.sqrt(105.0 / math.pi),
    -0.25 * math.sqrt(21.0 / (2.0 * math.pi)),
    0.25 * math.sqrt(7.0 / math.pi),
    -0.25 * math.sqrt(21.0 / (2.0 * math.pi)),
    0.25 * math.sqrt(105.0 / math.pi),
    -0.25 * math.sqrt(35.0 / (2.0 * math.pi)),
)


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per channel for ``degree`` (1, 4, 9 or 16)."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Evaluate the real SH basis functions at unit directions.

    Args:
        degree: highest band, 0..3.
        dirs: [..., 3] unit vectors (x, y, z).

    Returns:
        [..., (degree + 1) ** 2] basis values, ordered band by band, m = -l..l.
    """
    num_sh_bases(degree)
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Raw SH expansion ``sum_k sh[..., k, :] * Y_k(dirs)`` (no offset, no clamp).

    Args:
        degree: bands used; only the first ``(degree + 1) ** 2`` coefficients are read.
        sh: [..., K, 3] coefficients with K >= (degree + 1) ** 2.
        dirs: [..., 3] unit directions, broadcastable against ``sh[..., 0, :]``.

    Returns:
        [..., 3] values.
    """
    k = num_sh_bases(degree)
    if sh.shape[-2] < k:
        raise ValueError(f"sh has {sh.shape[-2]} coefficients, degree {degree} needs {k}")
    basis = sh_basis(degree, dirs)
    return (basis[..., None] * sh[..., :k, :]).sum(dim=-2)


def sh_to_rgb(degree: int, sh: torch.Tensor, means: torch.Tensor, camera_centers: torch.Tensor) -> torch.Tensor:
    """View-dependent colour of every Gaussian seen from every camera, as 3DGS computes it.

    Args:
        degree: SH degree in use, 0..3.
        sh: [N, K, 3] coefficients.
        means: [N, 3] Gaussian centres (world).
        camera_centers: [C, 3] camera centres (world).

    Returns:
        [C, N, 3] colours ``max(SH(d) + 0.5, 0)`` with ``d`` the unit direction camera centre -> mean.
        For degree 0 the colour does not depend on the view and is broadcast (no per-view copy).
    """
    num_cams = camera_centers.shape[0]
    if degree == 0:
        rgb = (SH_C0 * sh[:, 0, :] + 0.5).clamp_min(0.0)
        return rgb[None].expand(num_cams, -1, -1)
    dirs = torch.nn.functional.normalize(means[None] - camera_centers[:, None], dim=-1)
    return (eval_sh(degree, sh[None], dirs) + 0.5).clamp_min(0.0)
