"""Image-quality metrics: PSNR and SSIM on images in [0, 1], and a mean ± std summary.

Images are [H, W, 3] or batches [N, H, W, 3] (any float dtype; computed in float64). Batches are averaged:
PSNR as the mean of per-image PSNRs, SSIM as the mean of per-image SSIMs.

PSNR of identical images is ``inf`` (MSE 0) — it is not capped; callers summarising many views should expect
it only for exact copies.

SSIM is Wang et al. 2004 ("Image quality assessment: from error visibility to structural similarity", eq. 13)
with the standard settings: an 11 x 11 Gaussian window of σ = 1.5 (normalised to sum 1), K1 = 0.01, K2 = 0.03,
dynamic range L = 1, computed per channel and averaged over channels and positions. Statistics are taken only
where the window fits entirely inside the image ('valid' convolution, no padding), so images must be at least
11 px on each side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

SSIM_WINDOW_PX = 11
SSIM_SIGMA_PX = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 1.0


def _as_batch(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and return float64 [N, H, W, 3] views of both images."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(f"expected [H, W, 3] or [N, H, W, 3] images, got shape {tuple(a.shape)}")
    if a.dim() == 3:
        a, b = a[None], b[None]
    return a.detach().to(torch.float64), b.detach().to(torch.float64).to(a.device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB, 10·log10(L² / MSE) with L = 1, averaged over the batch.

    Args:
        a, b: [H, W, 3] or [N, H, W, 3] in [0, 1].

    Returns:
        Mean PSNR over images; ``inf`` when an image pair is identical.
    """
    x, y = _as_batch(a, b)
    mse = ((x - y) ** 2).flatten(1).mean(dim=1)
    values = 10.0 * torch.log10(DATA_RANGE**2 / mse)  # mse == 0 gives +inf
    return float(values.mean())


def gaussian_window(size_px: int = SSIM_WINDOW_PX, sigma_px: float = SSIM_SIGMA_PX) -> torch.Tensor:
    """[size_px] float64 1-D Gaussian centred on the middle tap, normalised to sum 1."""
    x = torch.arange(size_px, dtype=torch.float64) - (size_px - 1) / 2.0
    w = torch.exp(-(x**2) / (2.0 * sigma_px**2))
    return w / w.sum()


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of [B, 1, H, W] without padding -> [B, 1, H - s + 1, W - s + 1]."""
    s = window.shape[0]
    x = F.conv2d(x, window.reshape(1, 1, s, 1))
    return F.conv2d(x, window.reshape(1, 1, 1, s))


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel, per-channel SSIM (Wang et al. eq. 13) over the valid positions.

    Args:
        a, b: [H, W, 3] or [N, H, W, 3] in [0, 1], H and W at least ``SSIM_WINDOW_PX``.

    Returns:
        [N, 3, H - 10, W - 10] float64.
    """
    x, y = _as_batch(a, b)
    n, h, w, c = x.shape
    if min(h, w) < SSIM_WINDOW_PX:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW_PX} px per side, got {h}x{w}")
    window = gaussian_window().to(x.device)
    # Channels become batch entries: [N, H, W, 3] -> [N * 3, 1, H, W].
    x = x.permute(0, 3, 1, 2).reshape(n * c, 1, h, w)
    y = y.permute(0, 3, 1, 2).reshape(n * c, 1, h, w)
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    var_x = _filter_valid(x * x, window) - mu_x**2
    var_y = _filter_valid(y * y, window) - mu_y**2
    cov = _filter_valid(x * y, window) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    values = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return values.reshape(n, c, *values.shape[-2:])


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (module docstring) of [H, W, 3] or [N, H, W, 3] images in [0, 1]; 1.0 for identical images."""
    return float(ssim_map(a, b).mean())


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, population standard deviation, ddof = 0) of a non-empty sequence of numbers.

    An ``inf`` among the values (e.g. the PSNR of an exact copy) makes the mean ``inf`` and the std ``nan``.

    Raises:
        ValueError: on an empty sequence.
    """
    data = [float(v) for v in values]
    if not data:
        raise ValueError("mean_std needs at least one value")
    mean = sum(data) / len(data)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in data) / len(data))
