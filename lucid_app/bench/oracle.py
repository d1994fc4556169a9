"""The supervised ceiling of the quality benchmark (DESIGN §5b): the same run, fitted to the ground-truth views.

:class:`OracleTrainer` is a :class:`~lucid_app.train.trainer.Trainer` in every respect (initial Gaussians, seed and
generator, optimiser and learning-rate schedules, densification, the regularisers of ``losses.step_losses``, the
number of steps) except the step's objective, the trainer's extension point (``Trainer.step_objective``):

1. its cameras: each step draws min(C, N) distinct views of the object's N *train* views (C =
   ``cameras.batch_size``) with the trainer's generator, instead of orbit cameras from the sampling band;
2. its loss: the photometric error of the render against those views' images (composited on white, at the render
   size) instead of a guidance's.

The loss is the squared error *summed* over views, pixels and channels, weighted by 2·λ (λ =
``guidance.lambda_guidance``):
    L = 2λ · Σ (render − image)²,   dL/d render = 4λ·(render − image),
which is what the gradient λ·(x₀ − y) on x₀ = 2·render − 1 gives through the chain rule: the gradient a guidance
injects in a pixel-space prior when its pseudo-GT x̂₀ is the true image y (for SDS λ·w(t)·(ε̂ − ε) = λ·(x₀ − x̂₀)
exactly; a sum over pixels, ``guidance/base.py``). The guidances' losses are sums too, so the regularisers weigh the
same against it; a *mean* squared error would be ~10⁴ times smaller per pixel at 64 px and the TV terms would dominate
the fit. The training-time perturbations that only make sense for a guidance are off (:func:`supervised_config`): the
images are on white, so the renders are too.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from lucid_app.config import TrainConfig, replace
from lucid_app.guidance import GuidanceOutput
from lucid_app.priors.base import DiffusionPrior
from lucid_app.render.cameras import CameraBatch
from lucid_app.train.controls import ControlState
from lucid_app.train.trainer import StepObjective, Trainer

WHITE = (1.0, 1.0, 1.0)


def supervised_config(config: TrainConfig) -> TrainConfig:
    """``config`` for a supervised fit: white background without augmentation, no disparity inputs, no flips
    (everything else, the Gaussians' schedules included, unchanged)."""
    render = replace(config.render, background=WHITE, bg_aug_ratio=0.0)
    loss = replace(config.loss, disparity_ratio=0.0, flip_ratio=0.0)
    return replace(config, render=render, loss=loss)


def photometric_loss(renders: torch.Tensor, images: torch.Tensor, lambda_guidance: float) -> torch.Tensor:
    """2λ · Σ (renders − images)² (module docstring: the guidances' gradient with the true pseudo-GT).

    Args:
        renders: [C, H, W, 3] in [0, 1], with grad.
        images: [C, H, W, 3] in [0, 1], the ground truth at the same cameras.
        lambda_guidance: λ of the guidances.

    Returns:
        Scalar.
    """
    return 2.0 * lambda_guidance * (renders - images).square().sum()


class OracleTrainer(Trainer):
    """A :class:`Trainer` that fits posed images photometrically (module docstring).

    Args:
        config: the run's config (:func:`supervised_config` is applied to it).
        prior: any prior; only the prompt bookkeeping of :class:`Trainer` uses it (nothing is denoised).
        images: [N, R, R, 3] in [0, 1] the object's train views on white, R = ``render.width`` = ``render.height``.
        cameras: their N cameras at R × R.
        **kwargs: :class:`Trainer`'s keyword arguments (``device``, ``renderer``, ...).

    Raises:
        ValueError: images and cameras disagree with each other or with the render size.
    """

    def __init__(self, config: TrainConfig, prior: DiffusionPrior, images: torch.Tensor, cameras: CameraBatch,
                 **kwargs: Any) -> None:
        super().__init__(supervised_config(config), prior, **kwargs)
        size = (self.config.render.height, self.config.render.width)
        sizes = {tuple(images.shape[1:3]), (cameras.height, cameras.width), size}
        if images.shape[0] != len(cameras) or len(sizes) != 1:
            raise ValueError(
                f"oracle: {images.shape[0]} images of {tuple(images.shape[1:3])} px and {len(cameras)} cameras of "
                f"{(cameras.height, cameras.width)} px must match the render size {size}"
            )
        self.images = images.to(self.device)
        self.cameras = cameras.to(self.device)

    def step_objective(self, k: int, snap: ControlState) -> StepObjective:
        """min(C, N) distinct train views drawn with the run's generator, and the photometric loss of their renders
        against the views' images (:func:`photometric_loss`)."""
        count = min(self.config.cameras.batch_size, len(self.cameras))
        views = torch.randperm(len(self.cameras), generator=self.generator)[:count].to(self.device)
        return StepObjective(cameras=self.cameras[views],
                             loss=partial(fit_images, target=self.images[views],
                                          lambda_guidance=self.config.guidance.lambda_guidance))


def fit_images(image: torch.Tensor, target: torch.Tensor, lambda_guidance: float) -> GuidanceOutput:
    """The photometric loss of renders ``image`` [C, R, R, 3] against ``target`` (the same shape), with the
    diagnostics a guidance reports (t = s = δ_T = 0, the norm of the gradient on the render)."""
    loss = photometric_loss(image, target, lambda_guidance)
    grad = (4.0 * lambda_guidance * (image - target)).detach()
    diagnostics = {"t": 0.0, "s": 0.0, "delta_t": 0.0, "grad_norm": float(grad.norm())}
    return GuidanceOutput(loss=loss, grad=grad, diagnostics=diagnostics)
