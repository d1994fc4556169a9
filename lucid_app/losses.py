"""Pure per-step pieces of the training objective besides the guidance (DESIGN §4, "other reference settings").

- total variation of the rendered colour and depth (smoothness regularisers),
- the mean-scale penalty (keeps Gaussians small),
- the normalised disparity as a grey image (fed to the guidance instead of the colour on some steps),
- background augmentation and the multiplicative scale noise (training-time perturbations).
Every random draw comes from the caller's ``torch.Generator``.
"""

from __future__ import annotations

import torch


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally and vertically adjacent pixels (anisotropic L1 TV).

    Args:
        image: [C, H, W, K] images (any K).

    Returns:
        Scalar: mean over all neighbour pairs of both directions.
    """
    dx = (image[:, :, 1:, :] - image[:, :, :-1, :]).abs().mean()
    dy = (image[:, 1:, :, :] - image[:, :-1, :, :]).abs().mean()
    return dx + dy


def disparity_image(depth: torch.Tensor, alpha: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalised disparity as a grey RGB image, differentiable.

    Expected depth is ``depth / alpha`` (``depth`` is the alpha-weighted sum of z), so ``alpha / depth`` is the
    disparity weighted by coverage: 0 on the background, largest on the nearest surface. Each view is divided by
    its own maximum.

    Args:
        depth: [C, H, W, 1] alpha-weighted depth; alpha: [C, H, W, 1] accumulated opacity.

    Returns:
        [C, H, W, 3] in [0, 1].
    """
    disparity = alpha * alpha / depth.clamp_min(eps)
    peak = disparity.flatten(1).amax(dim=1).clamp_min(eps)
    return (disparity / peak[:, None, None, None]).expand(*disparity.shape[:3], 3)


def sample_backgrounds(
    count: int,
    default: tuple[float, float, float],
    aug_ratio: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Per-view backgrounds [count, 3]: ``default`` except, with probability ``aug_ratio`` per view, a random
    colour or black (each half of those)."""
    base = torch.tensor(default, dtype=torch.float32).expand(count, 3)
    augment = torch.rand(count, generator=generator) < aug_ratio
    black = torch.rand(count, generator=generator) < 0.5
    random_rgb = torch.rand(count, 3, generator=generator)
    augmented = torch.where(black[:, None], torch.zeros_like(random_rgb), random_rgb)
    return torch.where(augment[:, None], augmented, base)


def scale_noise(scales: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Scales [N, 3] times (1 + std·n), n ~ N(0, 1) per Gaussian and axis, kept ≥ 10 % of the scale."""
    if std <= 0:
        return scales
    noise = torch.randn(scales.shape, generator=generator).to(scales.device)
    return scales * (1.0 + std * noise).clamp_min(0.1)
