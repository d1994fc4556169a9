"""Pure per-step pieces of the training objective besides the guidance (DESIGN §4, "other reference settings").

- :func:`step_losses`: the step's named, weighted loss terms (the guidance's loss and the regularisers below),
- total variation of the rendered colour and depth (smoothness regularisers; L2 on the min-max-normalised disparity
  as the official code, or L1),
- the mean-scale penalty (keeps Gaussians small),
- the normalised disparity as a grey image (fed to the guidance instead of the colour on some steps),
- background augmentation, the multiplicative scale noise and the random left-right flip of the rendered batch
  (training-time perturbations).
Every random draw comes from the caller's ``torch.Generator``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from lucid_app.config import LossConfig
    from lucid_app.render.base import RenderOutput


def total_variation(image: torch.Tensor, norm: Literal["l1", "l2"] = "l1") -> torch.Tensor:
    """Total variation over horizontally and vertically adjacent pixels.

    "l1": mean |dx| + mean |dy| (anisotropic L1 TV). "l2": 2·(mean dx² + mean dy²), which is the official
    LucidDreamer ``tv_loss`` (2·(Σdy²/count_h + Σdx²/count_w)/B with count = K·(H−1)·W resp. K·H·(W−1)).

    Args:
        image: [C, H, W, K] images (any K).
        norm: "l1" or "l2".

    Returns:
        Scalar.
    """
    dx = image[:, :, 1:, :] - image[:, :, :-1, :]
    dy = image[:, 1:, :, :] - image[:, :-1, :, :]
    if norm == "l2":
        return 2.0 * (dx.square().mean() + dy.square().mean())
    return dx.abs().mean() + dy.abs().mean()


def minmax_disparity(depth: torch.Tensor, alpha: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Disparity normalised to [0, 1] per view by its own min and max (the official renderer's "depth" output).

    Uses the coverage-weighted disparity of :func:`disparity_image` (0 on the background), then
    (d − min)/(max − min) per view; a constant view gives 0. The official renderer's disparity is
    focal/(depth + 10α) of its rasteriser's depth, with the min over pixels of α ≤ 0.1: in both the minimum is the
    background's, the maximum the nearest surface's; the shape between differs with the two depth conventions.

    Args:
        depth: [C, H, W, 1] alpha-weighted depth; alpha: [C, H, W, 1] accumulated opacity.

    Returns:
        [C, H, W, 1] in [0, 1].
    """
    disparity = alpha * alpha / depth.clamp_min(eps)
    flat = disparity.flatten(1)
    low = flat.amin(dim=1)[:, None, None, None]
    span = (flat.amax(dim=1)[:, None, None, None] - low).clamp_min(eps)
    return (disparity - low) / span


def flip_views(
    images: torch.Tensor, ratio: float, generator: torch.Generator, control: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """Flip the whole batch left-right with probability ``ratio`` (one draw; none when ``ratio`` is 0).

    The official code flips the rendered batch before encoding (torchvision ``RandomHorizontalFlip`` on the
    stacked batch: one coin for all views); the camera, and so the view prompt, is unchanged. Control images
    [C, H, W, 3] are flipped with the renders so that they stay aligned; other control tensors (camera
    directions) are returned as they are.

    Args:
        images: [C, H, W, K] renders.
        ratio: flip probability.
        generator: source of the coin.
        control: optional control tensor.

    Returns:
        (images, control, flipped).
    """
    if ratio <= 0.0:
        return images, control, False
    if not bool(torch.rand((), generator=generator) < ratio):
        return images, control, False
    if control is not None and control.dim() == 4:
        control = control.flip(2)
    return images.flip(2), control, True


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


def guidance_input(out: RenderOutput, use_disparity: bool) -> torch.Tensor:
    """What the guidance sees of a render: the colour, or on disparity steps the normalised disparity as a grey image.

    Args:
        out: the step's render (``rgb`` [C, H, W, 3], ``depth`` and ``alpha`` [C, H, W, 1]).
        use_disparity: this step's coin (drawn with probability ``loss.disparity_ratio``).

    Returns:
        [C, H, W, 3] in [0, 1].
    """
    return disparity_image(out.depth, out.alpha) if use_disparity else out.rgb


def step_losses(
    guidance_loss: torch.Tensor, out: RenderOutput, scales: torch.Tensor, config: LossConfig
) -> dict[str, torch.Tensor]:
    """The named, weighted terms of one step's objective; their sum is the loss that is back-propagated.

    Args:
        guidance_loss: the guidance's scalar loss (already weighted by the guidance).
        out: the step's render (``rgb`` [C, H, W, 3], ``depth`` and ``alpha`` [C, H, W, 1]).
        scales: [N, 3] the Gaussians' activated scales (without the training noise).
        config: the loss weights and the TV settings.

    Returns:
        ``guidance``, ``tv_rgb``, ``tv_depth`` and ``scale``: scalars, in this order (the order they are summed in).
    """
    depth = minmax_disparity(out.depth, out.alpha) if config.tv_depth_source == "disparity" else out.depth
    return {
        "guidance": guidance_loss,
        "tv_rgb": config.tv_rgb * total_variation(out.rgb, config.tv_norm),
        "tv_depth": config.tv_depth * total_variation(depth, config.tv_norm),
        "scale": config.scale * scales.mean(),
    }
