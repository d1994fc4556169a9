"""Interval Score Matching (LucidDreamer, supplementary eq. 4), as the authors' code runs it (DESIGN §4).

For C views x₀ [C, ...] (SD latents or the multi-view prior's pixels), one iteration:
1. δ_T and the t range from the step (``ddim.delta_t_at``, ``ddim.t_bounds_at``; the step is 1-based, see
   :mod:`lucid_app.guidance.base`); one t for the batch; s = max(t − δ_T, 0).
2. DDIM-invert x₀ → x_s (η = ``xs_eta``, 0 by default) with the inverse prompt, from x₀ noised to the first
   index of ``ddim.inversion_schedule`` with offset noise (``offset_noise``, 0.1 as the official code). The
   inversion's UNet calls get no ControlNet images unless ``inversion_control`` (as the official code).
3. One more inversion step s → t gives x_t; its ε̂(x_s, s, ∅) is the target.
4. ε̂(x_t, t) with CFG on the negative prompt and the view prompts (or Perp-Neg), ``cfg.guided_noise``.
5. grad = λ·w(t)·(ε̂ − target), non-finite values zeroed, injected as d loss / d x₀.

The loss (``base.gradient_loss``) is ⟨grad, x₀⟩ summed over all elements (grad detached), so d loss / d x₀ is
*bit-exactly* grad — the reference's ``SpecifyGradient`` scale: no mean over the batch or the elements. (The other usual
trick, ½‖x₀ − (x₀ − grad)‖², has gradient x₀ − (x₀ − grad), which loses the low bits of grad when |x₀| ≫ |grad|.) Its
value carries no meaning; log ``diagnostics["grad_norm"]`` instead.
"""

from __future__ import annotations

import torch

from lucid_app.config import GuidanceConfig
from lucid_app.guidance.base import (
    GuidanceOutput,
    finish,
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
)
from lucid_app.guidance.prompts import PromptEmbeddings
from lucid_app.priors.base import DiffusionPrior


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
    """One ISM evaluation (module docstring, steps 1-5); a :class:`~lucid_app.guidance.base.Guidance`.

    Arguments and output as the protocol; ``generator`` draws t, the inversion's start noise and the η noise.
    """
    T = prior.num_train_timesteps
    alphas = prior.alphas_cumprod
    gs = scale_for(config, guidance_scale)
    dt = interval_for(step, config, delta_t)
    # 1. One t for the batch; s = max(t − δ_T, 0).
    t = timestep_for(step, config, T, generator, t)
    s = max(t - dt, 0)
    with torch.no_grad():
        x = x0.detach()
        noise = offset_noise_like(x, config.offset_noise, generator)
        inv_control = inversion_control(control, config.inversion_control)

        def inverse_eps(x_a: torch.Tensor, a: int) -> torch.Tensor:
            return inversion_noise(prior, x_a, a, prompts, config.denoise_guidance_scale, inv_control)

        # 2. DDIM inversion x₀ → x_s.
        schedule = inversion_schedule(s, config.xs_delta_t, config.xs_inv_steps)
        x_start = add_noise(x, noise, alphas[schedule[0]])
        x_s = ddim_invert(x_start, schedule, alphas, inverse_eps, eta=config.xs_eta, generator=generator)
        # 3. s → t; the ε̂ at (x_s, s) is the target.
        target = inverse_eps(x_s, s)
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
