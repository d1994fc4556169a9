"""The guidance contract: the :class:`Guidance` protocol every method (ISM, SDS, SDI, naive) implements, its
:class:`GuidanceOutput`, and the steps the methods share.

Conventions, stated once here for every method:
- ``step`` is the training step as the trainer counts it, 1-based (the first optimisation step is 1); it only
  drives the warm-up schedules of δ_T and of the t range (``ddim.delta_t_at``, ``ddim.t_bounds_at``) and SDI's
  annealing of t (``ddim.sdi_t_bounds_at``).
- δ_T reaches a guidance once: scheduled from ``config`` and ``step`` (the trainer puts the live δ_T into
  ``config``), unless ``delta_t`` forces it (the pseudo-GT inspector), as ``t`` forces the timestep.
- Loss convention: the loss is ⟨grad, x₀⟩ (:func:`gradient_loss`; :mod:`lucid_app.guidance.ism` explains why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from lucid_app.config import GuidanceConfig, replace
from lucid_app.guidance.cfg import cfg_combine
from lucid_app.guidance.ddim import delta_t_at, sample_timestep, snr_weight, t_bounds_at
from lucid_app.guidance.prompts import PromptEmbeddings
from lucid_app.priors.base import DiffusionPrior


@dataclass
class GuidanceOutput:
    """What a guidance function returns (it writes nothing and never sees Gaussians).

    Attributes:
        loss: scalar whose gradient w.r.t. x₀ is ``grad`` (:func:`gradient_loss`).
        grad: [C, ...] the injected gradient, detached.
        diagnostics: ``t``, ``s``, ``delta_t`` (timestep indices; SDS and SDI report s = t, δ_T = 0) and ``grad_norm``.
        previews: on request, x₀-space estimates [C, ...] for the caller to ``prior.decode``: ``pred_x0`` (the
            guided one-step estimate from x_t, the pseudo-GT of supplementary Fig. 1) and, for ISM,
            ``target_x0`` (the inversion's estimate at s).
    """

    loss: torch.Tensor
    grad: torch.Tensor
    diagnostics: dict[str, float]
    previews: dict[str, torch.Tensor] = field(default_factory=dict)


class Guidance(Protocol):
    """One guidance evaluation: the single signature the trainer, the 2-D distillation bench and the inspector call.

    Args:
        prior: any :class:`DiffusionPrior` (only the protocol is used).
        x0: [C, ...] the views in the prior's space (``prior.encode_images`` of the renders), with grad.
        azimuth_deg: [C] camera azimuths (view prompts, Perp-Neg weights).
        prompts: the encoded prompts (:func:`lucid_app.guidance.prompts.encode_prompt_set`).
        step: training step, 1-based (module docstring), for the δ_T and t-range schedules.
        config: guidance settings (λ, t range, δ_T, inversion, Perp-Neg, ...).
        generator: the only source of randomness.
        guidance_scale: overrides ``config.guidance_scale`` (live control); None = the config's.
        delta_t: forces δ_T instead of its schedule (the inspector); None = ``delta_t_at(step, config)``.
            Methods without an interval (SDS, SDI) ignore it.
        control: optional [C, H, W, 3] ControlNet images, or the [C, 3] camera directions of a
            camera-conditioned prior.
        return_previews: also return x̂₀ estimates (``GuidanceOutput.previews``).
        t: forces the timestep index instead of drawing it (the inspector); None = scheduled draw.

    Returns:
        :class:`GuidanceOutput`.
    """

    def __call__(
        self,
        prior: DiffusionPrior,
        x0: torch.Tensor,
        azimuth_deg: torch.Tensor,
        prompts: PromptEmbeddings,
        step: int,
        config: GuidanceConfig,
        generator: torch.Generator,
        guidance_scale: float | None = None,
        delta_t: int | None = None,
        control: torch.Tensor | None = None,
        return_previews: bool = False,
        t: int | None = None,
    ) -> GuidanceOutput: ...


def for_run(config: GuidanceConfig, steps: int) -> GuidanceConfig:
    """``config`` for a run of ``steps`` steps: ``sdi_anneal_steps`` = 0 (the default) becomes the run's length, the
    one setting a guidance cannot resolve itself (it never sees ``optim.steps``)."""
    return replace(config, sdi_anneal_steps=config.sdi_anneal_steps or steps)


def scale_for(config: GuidanceConfig, guidance_scale: float | None) -> float:
    """The CFG scale of this evaluation: ``guidance_scale`` when given (live control), else the config's."""
    return config.guidance_scale if guidance_scale is None else guidance_scale


def interval_for(step: int, config: GuidanceConfig, delta_t: int | None) -> int:
    """δ_T of this evaluation: ``delta_t`` when forced, else scheduled (``ddim.delta_t_at``)."""
    return delta_t_at(step, config) if delta_t is None else int(delta_t)


def timestep_for(
    step: int,
    config: GuidanceConfig,
    num_train_timesteps: int,
    generator: torch.Generator,
    t: int | None = None,
    bounds: tuple[int, int] | None = None,
) -> int:
    """The timestep t: drawn from the scheduled range with ``generator``, or ``t`` itself when forced (no draw).

    ``bounds`` is the method's own half-open range at ``step`` (SDI's ``ddim.sdi_t_bounds_at``); None = ISM's and
    SDS's ``ddim.t_bounds_at``.

    Raises:
        ValueError: a forced ``t`` outside [0, num_train_timesteps).
    """
    if t is None:
        lo, hi = t_bounds_at(step, config, num_train_timesteps) if bounds is None else bounds
        return sample_timestep(lo, hi, generator=generator)
    if not 0 <= int(t) < num_train_timesteps:
        raise ValueError(f"forced timestep t must be in [0, {num_train_timesteps}), got {t}")
    return int(t)


def gradient_loss(x0: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Scalar ⟨grad, x₀⟩ (grad detached) in float32: its gradient w.r.t. x₀ is exactly ``grad`` (cast to x₀'s dtype).

    The sum is taken in float32 whatever x₀'s dtype: with fp16 latents a sum in fp16 passes 65504 (a few thousand
    elements of |grad·x₀| ≈ 1 do) and turns into inf, and the trainer would skip a step whose gradient is finite.
    The product's upcast is exact, so d loss / d x₀ is still bit-exactly ``grad`` in x₀'s dtype.
    """
    return (grad.detach().to(x0.dtype).float() * x0.float()).sum()


def finish(
    x0: torch.Tensor, eps_pred: torch.Tensor, target: torch.Tensor, alpha_t: torch.Tensor, lambda_guidance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ISM's, SDS's and SDI's last step: grad = λ·w(t)·(ε̂ − target) with non-finite values zeroed; returns
    (loss, grad)."""
    grad = lambda_guidance * snr_weight(alpha_t).to(eps_pred.dtype) * (eps_pred - target)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    return gradient_loss(x0, grad), grad


def inversion_control(control: torch.Tensor | None, keep_images: bool) -> torch.Tensor | None:
    """The ``control`` the DDIM inversion's calls get: ControlNet images [C, H, W, 3] only when ``keep_images``.

    The official inversion runs the plain UNet (the ControlNet conditions only the guided prediction).
    Camera directions [C, 3] of a camera-conditioned prior are not a ControlNet input: they are the prior's own
    conditioning, so the inversion keeps them.
    """
    if control is None or keep_images or control.dim() != 4:
        return control
    return None


def inversion_noise(
    prior: DiffusionPrior,
    x: torch.Tensor,
    t: int,
    prompts: PromptEmbeddings,
    denoise_guidance_scale: float,
    control: torch.Tensor | None = None,
) -> torch.Tensor:
    """ε̂ used by the DDIM inversion at (x, t), without gradient.

    With ``denoise_guidance_scale`` ≤ 1: ε(x, y_inv). Above 1, the reference's "reverse" CFG in one batched call:
    ε(x, y_inv) + dgs·(ε(x, y_neg) − ε(x, y_inv)).
    """
    C = x.shape[0]
    inverse = prompts.inverse.expand(C, *prompts.inverse.shape[1:])
    t_batch = torch.full((C,), t, dtype=torch.long, device=x.device)
    with torch.no_grad():
        if denoise_guidance_scale <= 1.0:
            return prior.predict_noise(x, t_batch, inverse, control)
        negative = prompts.negative.expand(C, *prompts.negative.shape[1:])
        rep = (2, *([1] * (x.dim() - 1)))
        eps = prior.predict_noise(
            x.repeat(rep),
            t_batch.repeat(2),
            torch.cat([inverse, negative], dim=0),
            None if control is None else control.repeat(2, *([1] * (control.dim() - 1))),
        )
        eps_inv, eps_neg = eps[:C], eps[C:]
        return cfg_combine(eps_inv, eps_neg, denoise_guidance_scale)
