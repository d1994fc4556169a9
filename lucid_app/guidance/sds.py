"""Score Distillation Sampling (DreamFusion, eq. 3) on the same interface as ISM (DESIGN §4, last line).

x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε with ε from the generator (with ``offset_noise``, as ISM), target ε, and the same
prediction (CFG on the negative prompt / Perp-Neg), weighting w(t) = √((1−ᾱ_t)/ᾱ_t), λ and loss convention as
:mod:`lucid_app.guidance.ism` (``base.finish``).
t is drawn from the same scheduled range; δ_T does not apply (reported as 0, with s = t).
"""

from __future__ import annotations

import torch

from lucid_app.config import GuidanceConfig
from lucid_app.guidance.base import GuidanceOutput, finish, scale_for, timestep_for
from lucid_app.guidance.cfg import guided_noise
from lucid_app.guidance.ddim import add_noise, offset_noise_like, predict_x0
from lucid_app.guidance.prompts import PromptEmbeddings
from lucid_app.priors.base import DiffusionPrior


def sds_guidance(
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
    """One SDS evaluation; a :class:`~lucid_app.guidance.base.Guidance` (arguments and output as the protocol).

    ``delta_t`` is accepted for the shared signature and ignored; ``t`` forces the timestep (no draw).
    """
    alphas = prior.alphas_cumprod
    gs = scale_for(config, guidance_scale)
    t = timestep_for(step, config, prior.num_train_timesteps, generator, t)
    with torch.no_grad():
        noise = offset_noise_like(x0, config.offset_noise, generator)
        x_t = add_noise(x0.detach(), noise, alphas[t])
        eps_pred = guided_noise(prior, x_t, t, azimuth_deg, prompts, gs, config, control)
    loss, grad = finish(x0, eps_pred, noise, alphas[t], config.lambda_guidance)
    previews = {"pred_x0": predict_x0(x_t, eps_pred, alphas[t])} if return_previews else {}
    diagnostics = {"t": float(t), "s": float(t), "delta_t": 0.0, "grad_norm": float(grad.norm())}
    return GuidanceOutput(loss=loss, grad=grad, diagnostics=diagnostics, previews=previews)
