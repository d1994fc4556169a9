"""Interval Score Matching (LucidDreamer, supplementary eq. 4), as the authors' code runs it (DESIGN §4).

For C views x₀ [C, ...] (SD latents or the multi-view prior's pixels), one iteration:
1. δ_T and the t range from the step (``ddim.delta_t_at``, ``ddim.t_bounds_at``); one t for the batch;
   s = max(t − δ_T, 0).
2. DDIM-invert x₀ → x_s (η = ``xs_eta``, 0 by default) with the inverse prompt, from x₀ noised to the first
   index of ``ddim.inversion_schedule`` with offset noise (``offset_noise``, 0.1 as the official code). The
   inversion's UNet calls get no ControlNet images unless ``inversion_control`` (as the official code).
3. One more inversion step s → t gives x_t; its ε̂(x_s, s, ∅) is the target.
4. ε̂(x_t, t) with CFG on the negative prompt and the view prompts (or Perp-Neg), ``cfg.guided_noise``.
5. grad = λ·w(t)·(ε̂ − target), non-finite values zeroed, injected as d loss / d x₀.

The loss is ⟨grad, x₀⟩ summed over all elements (grad detached), so d loss / d x₀ is *bit-exactly* grad — the
reference's ``SpecifyGradient`` scale: no mean over the batch or the elements. (The other usual trick,
½‖x₀ − (x₀ − grad)‖², has gradient x₀ − (x₀ − grad), which loses the low bits of grad when |x₀| ≫ |grad|.)
Its value carries no meaning; log ``diagnostics["grad_norm"]`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lucid_app.config import GuidanceConfig
from lucid_app.guidance.cfg import cfg_combine, guided_noise
from lucid_app.guidance.ddim import (
    add_noise,
    ddim_jump,
    delta_t_at,
    inversion_schedule,
    offset_noise_like,
    predict_x0,
    sample_timestep,
    snr_weight,
    t_bounds_at,
)
from lucid_app.guidance.prompts import PromptEmbeddings
from lucid_app.priors.base import DiffusionPrior


@dataclass
class GuidanceOutput:
    """What a guidance function returns (it writes nothing and never sees Gaussians).

    Attributes:
        loss: scalar whose gradient w.r.t. x₀ is ``grad`` (see the module docstring).
        grad: [C, ...] the injected gradient, detached.
        diagnostics: ``t``, ``s``, ``delta_t`` (timestep indices; SDS reports s = t, δ_T = 0) and ``grad_norm``.
        previews: on request, x₀-space estimates [C, ...] for the caller to ``prior.decode``: ``pred_x0`` (the
            guided one-step estimate from x_t, the pseudo-GT of supplementary Fig. 1) and, for ISM,
            ``target_x0`` (the inversion's estimate at s).
    """

    loss: torch.Tensor
    grad: torch.Tensor
    diagnostics: dict[str, float]
    previews: dict[str, torch.Tensor] = field(default_factory=dict)


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
    """Step 5: grad = λ·w(t)·(ε̂ − target) with non-finite values zeroed; returns (loss, grad)."""
    grad = lambda_guidance * snr_weight(alpha_t).to(eps_pred.dtype) * (eps_pred - target)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    return gradient_loss(x0, grad), grad


def timestep_for(
    step: int, config: GuidanceConfig, num_train_timesteps: int, generator: torch.Generator, t: int | None = None
) -> int:
    """Step 1's t: drawn from the scheduled range with ``generator``, or ``t`` itself when forced (no draw).

    Raises:
        ValueError: a forced ``t`` outside [0, num_train_timesteps).
    """
    if t is None:
        return sample_timestep(*t_bounds_at(step, config, num_train_timesteps), generator=generator)
    if not 0 <= int(t) < num_train_timesteps:
        raise ValueError(f"forced timestep t must be in [0, {num_train_timesteps}), got {t}")
    return int(t)


def inversion_control(control: torch.Tensor | None, keep_images: bool) -> torch.Tensor | None:
    """The ``control`` the DDIM inversion's calls get: ControlNet images [C, H, W, 3] only when ``keep_images``.

    The official inversion runs the plain UNet (the ControlNet conditions only the guided prediction, step 4).
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


def ism_guidance(
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
) -> GuidanceOutput:
    """One ISM evaluation (module docstring, steps 1-5).

    Args:
        prior: any :class:`DiffusionPrior` (only the protocol is used).
        x0: [C, ...] the views in the prior's space (``prior.encode_images`` of the renders), with grad.
        azimuth_deg: [C] camera azimuths (view prompts, Perp-Neg weights).
        prompts: the encoded prompts (:func:`prompts.encode_prompt_set`).
        step: training step (0-based) for the δ_T and t-range schedules.
        config: guidance settings (λ, t range, inversion, Perp-Neg, ...).
        generator: the only source of randomness (t, the inversion's start noise, η noise).
        guidance_scale: overrides ``config.guidance_scale`` (live control).
        delta_t: overrides the scheduled δ_T (live control).
        control: optional [C, H, W, 3] control images for ControlNet priors.
        return_previews: also return x̂₀ estimates (``GuidanceOutput.previews``).
        t: forces the timestep index instead of drawing it (the pseudo-GT inspector); None = scheduled draw.

    Returns:
        :class:`GuidanceOutput`.
    """
    T = prior.num_train_timesteps
    alphas = prior.alphas_cumprod
    gs = config.guidance_scale if guidance_scale is None else guidance_scale
    dt = delta_t_at(step, config) if delta_t is None else int(delta_t)
    # 1. One t for the batch; s = max(t − δ_T, 0).
    t = timestep_for(step, config, T, generator, t)
    s = max(t - dt, 0)
    with torch.no_grad():
        x = x0.detach()
        noise = offset_noise_like(x, config.offset_noise, generator)
        inv_control = inversion_control(control, config.inversion_control)
        # 2. DDIM inversion x₀ → x_s.
        schedule = inversion_schedule(s, config.xs_delta_t, config.xs_inv_steps)
        x_cur = add_noise(x, noise, alphas[schedule[0]])
        for a, b in zip(schedule[:-1], schedule[1:]):
            eps = inversion_noise(prior, x_cur, a, prompts, config.denoise_guidance_scale, inv_control)
            x_cur = ddim_jump(x_cur, eps, alphas[a], alphas[b], eta=config.xs_eta, generator=generator)
        x_s = x_cur
        # 3. s → t; the ε̂ at (x_s, s) is the target.
        target = inversion_noise(prior, x_s, s, prompts, config.denoise_guidance_scale, inv_control)
        x_t = ddim_jump(x_s, target, alphas[s], alphas[t])
        # 4. Guided prediction at x_t.
        eps_pred = guided_noise(prior, x_t, t, azimuth_deg, prompts, gs, config, control)
    # 5. grad = λ·w(t)·(ε̂ − target).
    loss, grad = finish(x0, eps_pred, target, alphas[t], config.lambda_guidance)
    previews = {}
    if return_previews:
        previews = {"pred_x0": predict_x0(x_t, eps_pred, alphas[t]), "target_x0": predict_x0(x_s, target, alphas[s])}
    diagnostics = {"t": float(t), "s": float(s), "delta_t": float(dt), "grad_norm": float(grad.norm())}
    return GuidanceOutput(loss=loss, grad=grad, diagnostics=diagnostics, previews=previews)
