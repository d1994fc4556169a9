"""PSNR / SSIM / mean_std against closed forms and an independent numpy + scipy SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from lucid_app.bench.metrics import mean_std, psnr, ssim


def _image(seed: int, h: int = 32, w: int = 40) -> torch.Tensor:
    """A smooth-ish random image [h, w, 3] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 4, w // 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear").permute(0, 2, 3, 1)[0]


def _noisy(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + std * torch.randn(x.shape, generator=g)).clamp(0, 1)


def ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM written directly with scipy's Gaussian filter, on the valid region only.

    ``truncate`` makes the kernel radius 5 (11 taps, σ = 1.5); cropping 5 px per side keeps only positions
    whose window lies inside the image, so scipy's border mode never matters.
    """
    c1, c2, r = 0.01**2, 0.03**2, 5
    scores = []
    for ch in range(3):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)

        def blur(z: np.ndarray) -> np.ndarray:
            return gaussian_filter(z, sigma=1.5, truncate=r / 1.5, mode="constant")[r:-r, r:-r]

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        scores.append(s.mean())
    return float(np.mean(scores))


def test_psnr_identical_is_inf_and_constant_offset_is_closed_form() -> None:
    x = _image(0).double() * 0.8  # float64, so that x + 0.1 is an offset of exactly 0.1 up to rounding
    assert psnr(x, x) == math.inf
    assert psnr(x, x + 0.1) == pytest.approx(20.0, abs=1e-9)
    assert psnr(x, x + 0.01) == pytest.approx(40.0, abs=1e-9)
    # Batches average per-image values: offsets 0.1 and 0.01 -> (20 + 40) / 2.
    assert psnr(torch.stack([x, x]), torch.stack([x + 0.1, x + 0.01])) == pytest.approx(30.0, abs=1e-9)


def test_ssim_of_identical_images_is_one_and_decreases_with_noise() -> None:
    x = _image(1)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    scores = [ssim(x, _noisy(x, std, seed=2)) for std in (0.01, 0.05, 0.1, 0.3)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] < 0.5


@pytest.mark.parametrize("shape", [(32, 40), (11, 11), (17, 64)])
def test_ssim_matches_an_independent_scipy_implementation(shape: tuple[int, int]) -> None:
    x = _image(3, *shape)
    y = _noisy(x, 0.08, seed=4)
    assert ssim(x, y) == pytest.approx(ssim_reference(x.numpy(), y.numpy()), abs=1e-4)
    # Batch = mean of the per-image values.
    z = _noisy(x, 0.2, seed=5)
    batch = ssim(torch.stack([x, x]), torch.stack([y, z]))
    assert batch == pytest.approx(0.5 * (ssim(x, y) + ssim(x, z)), abs=1e-12)


def test_metrics_reject_bad_shapes() -> None:
    x = _image(6)
    with pytest.raises(ValueError):
        psnr(x, x[:-1])
    with pytest.raises(ValueError):
        ssim(x[:10, :10], x[:10, :10])
    with pytest.raises(ValueError):
        psnr(x[..., :2], x[..., :2])


def test_mean_std() -> None:
    assert mean_std([20.0, 30.0]) == pytest.approx((25.0, 5.0))
    assert mean_std([7.0]) == (7.0, 0.0)
    assert mean_std(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx((2.5, math.sqrt(1.25)))
    with pytest.raises(ValueError):
        mean_std([])
