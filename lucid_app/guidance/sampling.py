"""DDIM samples with classifier-free guidance from any prior (a trained prior's ``samples.png``, the prior doctor's
references without a dataset).

Deterministic DDIM (η = 0, DDIM eq. 12) over ``steps`` evenly spaced timesteps T − T/steps, ..., 0, the last step
going to x̂₀ itself; each step one batched prior call on [negative; positive] and CFG
ε̂ = ε(x, ∅) + s·(ε(x, y) − ε(x, ∅)) (:func:`lucid_app.guidance.cfg.cfg_combine`). The start noise comes from the
caller's generator, so a fixed generator gives the same samples for the same weights.
"""

from __future__ import annotations

import torch

from lucid_app.guidance.cfg import cfg_combine
from lucid_app.guidance.ddim import ddim_jump, predict_x0
from lucid_app.priors.base import DiffusionPrior


def ddim_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """[steps] timestep indices from high to low: T − T/steps, ..., T/steps, 0 (evenly spaced, "leading")."""
    stride = num_train_timesteps // steps
    return [i * stride for i in reversed(range(steps))]


@torch.no_grad()
def sample_cfg(
    prior: DiffusionPrior,
    prompts: list[str],
    shape: tuple[int, ...],
    generator: torch.Generator,
    steps: int = 50,
    scale: float = 5.0,
) -> torch.Tensor:
    """DDIM samples x₀ [P, ...] for ``prompts`` with CFG against the empty prompt.

    Args:
        prior: any diffusion prior.
        prompts: P prompt texts.
        shape: the shape of one x₀ (e.g. (3, R, R)).
        generator: source of the start noise x_T ~ N(0, I) (on the CPU).
        steps: DDIM steps.
        scale: CFG scale s.

    Returns:
        [P, *shape] x₀ on ``prior.device``.
    """
    cond = prior.encode_prompts(prompts)
    uncond = prior.encode_prompts([""]).expand_as(cond)
    both = torch.cat([uncond, cond])
    x = torch.randn((len(prompts), *shape), generator=generator).to(prior.device)
    alphas = prior.alphas_cumprod
    timesteps = ddim_timesteps(prior.num_train_timesteps, steps)
    for i, t in enumerate(timesteps):
        t_batch = torch.full((2 * len(prompts),), t, dtype=torch.long, device=prior.device)
        eps_neg, eps_pos = prior.predict_noise(torch.cat([x, x]), t_batch, both).chunk(2)
        eps = cfg_combine(eps_neg, eps_pos, scale)
        if i + 1 < len(timesteps):
            x = ddim_jump(x, eps, alphas[t], alphas[timesteps[i + 1]])
        else:
            x = predict_x0(x, eps, alphas[t])
    return x
