"""Score Distillation via Inversion (SDI; Lukoianov et al., "Score Distillation via Reparametrized DDIM",
NeurIPS 2024, arXiv 2405.15891) on the same interface as ISM and SDS.

The paper rewrites SDS as DDIM in the space of the one-step estimates x̂₀(t): SDS's update is a DDIM step whose
noise term is drawn afresh at every step, whereas DDIM infers it from the trajectory; SDI replaces SDS's random ε
by the noise a prompt-conditioned DDIM inversion of the render finds (§4, "Score Distillation via Inversion"), so
successive updates follow one DDIM trajectory. For C views x₀ [C, ...], one evaluation:
1. t from the annealing schedule (``ddim.sdi_t_bounds_at``, a pure function of the step): t_sched falls linearly
   from T·sdi_t_range[1] to T·sdi_t_range[0] over ``sdi_anneal_steps``; t is drawn uniform in
   [t_sched, t_sched + ⌈T/n⌉) (or forced).
2. DDIM inversion x₀ → x_t (``ddim.ddim_invert``): x₀ itself is the sample at index 0, then steps of ⌈T/n⌉
   indices (n = ``sdi_inversion_steps``), the last one shorter so that it ends at t; each ε̂ is the CFG
   combination of the negative and view prompts (Perp-Neg when on; ``cfg.guided_noise``) at scale
   g_inv = ``sdi_inversion_guidance_scale``; after each step η·σ_{b→a}·z is added (η = ``sdi_eta``,
   σ_{b→a} = ``ddim.reverse_step_sigma``).
3. The inversion's noise, in place of SDS's random ε:
       ε_inv = (x_t − √ᾱ_t·x₀) / √(1−ᾱ_t),   so that x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε_inv exactly.
4. Prediction at x_t with CFG on the negative prompt (or Perp-Neg), scale gs (``cfg.guided_noise``), as ISM/SDS.
5. grad = λ·w(t)·(ε̂(x_t, t) − ε_inv), w(t) = √((1−ᾱ_t)/ᾱ_t) (``base.finish``), injected as d loss / d x₀. Since
   ε̂ − ε_inv = (x₀ − x̂₀(x_t, ε̂))/γ(t) with γ(t) = √((1−ᾱ_t)/ᾱ_t), this is grad = λ·(x₀ − x̂₀): the official
   code's loss ½‖x₀ − x̂₀‖² (its "weighting" — the x₀-space difference — is exactly SDS's w(t) in ε space).

One inversion step, η = 0 (n = 1: indices [0, t]), with ε̂₀ = the guided inversion prediction at (x₀, 0) and
γ_k = √((1−ᾱ_k)/ᾱ_k):
       ε_inv = (1 − γ₀/γ_t)·ε̂₀ + (1/√ᾱ₀ − 1)/γ_t · x₀
(x̂₀ = (x₀ − √(1−ᾱ₀)·ε̂₀)/√ᾱ₀, x_t = √ᾱ_t·x̂₀ + √(1−ᾱ_t)·ε̂₀, then step 3). As ᾱ₀ → 1 this is SDS with ε replaced by
the prior's own noise estimate at the clean render, ε̂(x₀, 0).

Cost: ⌈t/⌈T/n⌉⌉ inversion calls (at most n) plus one for the prediction, each one batched prior call of 2C samples
(4C with Perp-Neg); with the defaults 4-5 calls at the end of the annealing (t ∈ [250, 350)) and 11 at its start.

Choices (the official code is threestudio's ``stable-diffusion-sdi-guidance`` with ``configs/sdi.yaml``):
- CFG convention: ε_neg + g·(ε_pos − ε_neg) for both the inversion and the prediction, with the paper's
  g_inv = −7.5 and gs = 7.5. The official code's Perp-Neg branch (``use_perp_neg: true`` in configs/sdi.yaml, the
  3-D setting) uses this form; its plain-CFG branch uses ε_pos + g·(ε_pos − ε_neg), i.e. scale 1 + g.
- The negative prompt is CFG's unconditional branch, as everywhere in this app (supplementary eq. 1 of
  LucidDreamer); the official code uses the empty prompt.
- Start of the inversion: x₀ taken as the sample at index 0 (ᾱ₀), no noise added — as the official code (its
  first step starts at ᾱ = ᾱ₀ since SD 2.1's scheduler has ``set_alpha_to_one: false``, but evaluates the
  UNet at timestep −99; here at 0).
- Inversion grid: 0, ⌈T/n⌉, 2⌈T/n⌉, … < t, then t (``ddim.inversion_schedule``); the official grid is
  1, 101, … ("leading" spacing, offset 1) after a first step from the clean render, one UNet call more.
- Jitter: the official code inverts to t + δ (δ uniform in [0, T/n), clamped to T − 1) but predicts and forms
  x̂₀ at the un-jittered t, so the UNet sees a sample δ noisier than its timestep label. Here δ shifts t itself
  — the inversion, ε_inv, the prediction and w(t) share one t, which keeps step 3's identity and step 5's
  x₀-space form exact. Same range of noise levels; t is drawn uniform in [t_sched, min(t_sched + ⌈T/n⌉, T)).
- Schedule: the official percentage is global_step / trainer_max_steps (0-based steps, max_steps 10000); here
  step / sdi_anneal_steps with the app's 1-based step (``ddim.warmup_ratio``), so t_sched reaches its low end at
  step ``sdi_anneal_steps`` exactly and stays there after it (the official one keeps falling past its length).
  The guidance does not see ``optim.steps``: ``sdi_anneal_steps`` = 0 (the default) means the run's length, which
  the trainer puts in (a call outside a run with 0 does not anneal).
- η noise: added after every inversion step with the σ of the matching denoising step, unscaled direction term —
  as the official ``ddim_inversion_step`` (``inversion_eta`` = 0.3); ``ddim.ddim_invert`` mode ``"added"``.
- λ: the app's ``lambda_guidance`` on the ⟨grad, x₀⟩ loss (``base.gradient_loss``); the official loss is
  ½·mean‖x₀ − x̂₀‖²/B with ``lambda_sdi`` = 1 — a different normalisation of the same direction.
- ControlNet images reach the inversion only with ``inversion_control``, as ISM's (``base.inversion_control``).
"""

from __future__ import annotations

import torch

from lucid_app.config import GuidanceConfig
from lucid_app.guidance.base import GuidanceOutput, finish, inversion_control, scale_for, timestep_for
from lucid_app.guidance.cfg import guided_noise
from lucid_app.guidance.ddim import (
    ddim_invert,
    inversion_schedule,
    inversion_stride,
    predict_x0,
    sdi_t_bounds_at,
)
from lucid_app.guidance.prompts import PromptEmbeddings
from lucid_app.priors.base import DiffusionPrior


def sdi_indices(t: int, n_steps: int, num_train_timesteps: int) -> list[int]:
    """Timestep indices of SDI's inversion x₀ → x_t: 0, then steps of ⌈T/n⌉, the last one ending at t (at most n
    steps; ``[0]`` for t = 0). Example: t = 450, n = 10, T = 1000 → [0, 100, 200, 300, 400, 450]."""
    return inversion_schedule(t, inversion_stride(n_steps, num_train_timesteps), n_steps)


def sdi_noise(
    prior: DiffusionPrior,
    x0: torch.Tensor,
    t: int,
    azimuth_deg: torch.Tensor,
    prompts: PromptEmbeddings,
    config: GuidanceConfig,
    generator: torch.Generator,
    control: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-3 of the module docstring: the inverted sample x_t and its noise ε_inv, without gradient.

    Args:
        x0: [C, ...] the views in the prior's space.
        t: the timestep index to invert to.
        azimuth_deg: [C] camera azimuths (view prompts, Perp-Neg weights).
        config: ``sdi_inversion_steps``, ``sdi_inversion_guidance_scale``, ``sdi_eta``, ``perp_neg``, ...
        generator: draws the η noise (one draw per inversion step when ``sdi_eta`` > 0).
        control: the prior's ``control`` for the views (ControlNet images reach the inversion only with
            ``config.inversion_control``).

    Returns:
        (x_t [C, ...], ε_inv [C, ...]) with x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε_inv.
    """
    alphas = prior.alphas_cumprod
    inv_control = inversion_control(control, config.inversion_control)
    scale = config.sdi_inversion_guidance_scale
    with torch.no_grad():
        x = x0.detach()
        x_t = ddim_invert(
            x, sdi_indices(t, config.sdi_inversion_steps, prior.num_train_timesteps), alphas,
            lambda x_a, a: guided_noise(prior, x_a, a, azimuth_deg, prompts, scale, config, inv_control),
            eta=config.sdi_eta, generator=generator, eta_mode="added",
        )
        a_t = torch.as_tensor(alphas[t], dtype=x.dtype, device=x.device)
        eps_inv = (x_t - a_t.sqrt() * x) / (1.0 - a_t).sqrt()
    return x_t, eps_inv


def sdi_guidance(
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
    """One SDI evaluation (module docstring, steps 1-5); a :class:`~lucid_app.guidance.base.Guidance`.

    ``delta_t`` is accepted for the shared signature and ignored; ``t`` forces the timestep (no draw);
    ``generator`` draws t, then the η noise of each inversion step.

    Returns:
        :class:`GuidanceOutput`; diagnostics ``t``, ``s`` (= t), ``delta_t`` (0), ``grad_norm``; previews
        ``pred_x0`` = x̂₀(x_t, ε̂) [C, ...], the pseudo-GT grad pulls x₀ towards.
    """
    T = prior.num_train_timesteps
    alphas = prior.alphas_cumprod
    gs = scale_for(config, guidance_scale)
    # 1. Annealed t (or forced).
    t = timestep_for(step, config, T, generator, t, bounds=sdi_t_bounds_at(step, config, T))
    # 2-3. Inversion x₀ → x_t and its noise.
    x_t, eps_inv = sdi_noise(prior, x0, t, azimuth_deg, prompts, config, generator, control)
    # 4. Guided prediction at x_t.
    with torch.no_grad():
        eps_pred = guided_noise(prior, x_t, t, azimuth_deg, prompts, gs, config, control)
    # 5. grad = λ·w(t)·(ε̂ − ε_inv).
    loss, grad = finish(x0, eps_pred, eps_inv, alphas[t], config.lambda_guidance)
    previews = {"pred_x0": predict_x0(x_t, eps_pred, alphas[t])} if return_previews else {}
    diagnostics = {"t": float(t), "s": float(t), "delta_t": 0.0, "grad_norm": float(grad.norm())}
    return GuidanceOutput(loss=loss, grad=grad, diagnostics=diagnostics, previews=previews)
