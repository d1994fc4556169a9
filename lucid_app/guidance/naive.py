"""The naive objective of LucidDreamer (supplementary eq. 2): a multi-step DDIM pseudo-GT instead of ISM's.

    L(θ) = E_t[ ω(t)/γ(t) · ‖x₀ − x̃₀ᵗ‖² ],   γ(t) = √(1−ᾱ_t)/√ᾱ_t,

where x̃₀ᵗ comes from DDIM-inverting x₀ to x_t and DDIM-denoising back, both with the interval δ_T. It is the
objective ISM approximates: ISM keeps only the first inversion interval and the last denoising estimate, so it
needs no multi-step denoising (supplementary eqs. 3-4). One evaluation for C views x₀ [C, ...]:
1. δ_T and t exactly as ISM (``delta_t_at``, the scheduled t range, or a forced t); same draws, same order.
2. Inversion, η = 0, with ISM's inversion prediction (``base.inversion_noise``: the inverse prompt, with CFG when
   ``denoise_guidance_scale`` > 1): from x₀ noised to index 0, steps of δ_T, the last one shorter, up to t:
   indices i₀ = 0 < i₁ < … < i_n = t (``ddim.inversion_schedule`` with no cap on the steps).
3. Denoising back along the same indices, t = i_n → … → i₁ → clean: at each i_k the *guided* prediction of ISM's
   step 4 (``cfg.guided_noise``: CFG on the negative prompt / Perp-Neg, scale gs), a DDIM jump i_k → i_{k−1},
   and from i₁ the x̂₀ estimate itself (the DDIM jump to ᾱ = 1) is x̃₀ᵗ. Why guided at every step: x̃₀ᵗ is meant
   to be what the conditional sampler would produce from x_t (the pseudo-GT of supplementary Fig. 1); guiding
   only the first step would leave the prompt's effect to one step of many, unguided ones would drop the prompt.
   With one interval (δ_T ≥ t) x̃₀ᵗ is ISM's own guided estimate x̂₀(x_t, t) (``previews["pred_x0"]``).
4. grad = λ·ω(t)/γ(t)·(x₀ − x̃₀ᵗ), x̃₀ᵗ a constant (no gradient through the prior), non-finite values zeroed,
   injected with ISM's loss convention (``base.gradient_loss``). ω(t) is the weight ISM and SDS apply to
   ε̂ − target, w(t) = √((1−ᾱ_t)/ᾱ_t) (DESIGN §4 step 5): since x₀ − x̂₀ = γ(t)·(ε̂ − ε) for SDS's one-step
   estimate, this choice gives the naive objective the same gradient scale as SDS/ISM (the factor 2 of the
   square absorbed in λ as for SDS). Numerically ω(t)/γ(t) = 1 — the code still evaluates the ratio so the
   equation stays visible.
Cost: 2·⌈t/δ_T⌉ prior calls (the inversion is not capped at ``xs_inv_steps``).
"""

from __future__ import annotations

import torch

from lucid_app.config import GuidanceConfig
from lucid_app.guidance.base import (
    GuidanceOutput,
    gradient_loss,
    interval_for,
    inversion_control,
    inversion_noise,
    scale_for,
    timestep_for,
)
from lucid_app.guidance.cfg import guided_noise
from lucid_app.guidance.ddim import (
    add_noise,
    ddim_invert,
    ddim_jump,
    inversion_schedule,
    offset_noise_like,
    predict_x0,
    snr_weight,
)
from lucid_app.guidance.prompts import PromptEmbeddings
from lucid_app.priors.base import DiffusionPrior


def gamma(alpha: torch.Tensor | float) -> torch.Tensor:
    """γ(t) = √(1−ᾱ_t)/√ᾱ_t (supplementary eq. 2): x₀ − x̂₀ᵗ = γ(t)·(ε̂ − ε) for the one-step estimate."""
    alpha = torch.as_tensor(alpha)
    return (1.0 - alpha).sqrt() / alpha.sqrt()


def naive_guidance(
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
    """One evaluation of the naive objective (module docstring); a :class:`~lucid_app.guidance.base.Guidance`
    (arguments and output as the protocol).

    Returns:
        :class:`GuidanceOutput`; diagnostics ``t``, ``s`` (the first denoising target max(t − δ_T, 0)),
        ``delta_t``, ``grad_norm``; previews ``pred_x0`` = x̃₀ᵗ [C, ...].
    """
    alphas = prior.alphas_cumprod
    gs = scale_for(config, guidance_scale)
    dt = interval_for(step, config, delta_t)
    # 1. t, then the start noise (ISM's order of draws).
    t = timestep_for(step, config, prior.num_train_timesteps, generator, t)
    indices = inversion_schedule(t, dt)
    with torch.no_grad():
        x = x0.detach()
        x_cur = add_noise(x, offset_noise_like(x, config.offset_noise, generator), alphas[indices[0]])
        inv_control = inversion_control(control, config.inversion_control)
        # 2. Inversion x₀ → x_t along the indices.
        x_cur = ddim_invert(
            x_cur, indices, alphas,
            lambda x_a, a: inversion_noise(prior, x_a, a, prompts, config.denoise_guidance_scale, inv_control),
        )
        # 3. Guided denoising back: i_n → … → i₁, then x̂₀ from i₁ (from x_t itself when t = 0).
        pseudo_gt = x_cur
        denoise = indices[:0:-1] or [indices[0]]
        for k, a in enumerate(denoise):
            eps = guided_noise(prior, x_cur, a, azimuth_deg, prompts, gs, config, control)
            if k + 1 < len(denoise):
                x_cur = ddim_jump(x_cur, eps, alphas[a], alphas[denoise[k + 1]])
            else:
                pseudo_gt = predict_x0(x_cur, eps, alphas[a])
    # 4. grad = λ·ω(t)/γ(t)·(x₀ − x̃₀ᵗ).
    weight = config.lambda_guidance * (snr_weight(alphas[t]) / gamma(alphas[t])).to(x.dtype)
    grad = torch.nan_to_num(weight * (x - pseudo_gt), nan=0.0, posinf=0.0, neginf=0.0)
    previews = {"pred_x0": pseudo_gt} if return_previews else {}
    diagnostics = {"t": float(t), "s": float(max(t - dt, 0)), "delta_t": float(dt), "grad_norm": float(grad.norm())}
    return GuidanceOutput(loss=gradient_loss(x0, grad), grad=grad, diagnostics=diagnostics, previews=previews)
