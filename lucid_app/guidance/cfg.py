"""Classifier-free guidance with the negative prompt as the unconditional branch, and Perp-Neg.

- CFG (supplementary eq. 1): ε̂ = ε(x, y_neg) + gs·(ε(x, y) − ε(x, y_neg)).
- Perp-Neg (Armandpour et al. 2023, eq. 9): the positive direction d₊ = ε(x, y) − ε(x, y_neg) plus, for each
  negative view prompt k, w_k times the component of d_k = ε(x, y_k) − ε(x, y_neg) perpendicular to d₊
  (per sample, over all elements): ε̂ = ε(x, y_neg) + gs·(d₊ + Σ_k w_k·(d_k − ⟨d_k, d₊⟩/‖d₊‖²·d₊)).
:func:`guided_noise` evaluates either with one batched prior call (DESIGN §4 step 4), shared by ISM and SDS.
"""

from __future__ import annotations

import torch

from lucid_app.config import GuidanceConfig
from lucid_app.guidance.prompts import PromptEmbeddings, perp_neg_weights
from lucid_app.priors.base import DiffusionPrior

# Floor of ‖d₊‖² in the projection, so that a zero positive direction leaves d_k unchanged (as the reference).
_MIN_NORM_SQ = 1e-6


def cfg_combine(eps_neg: torch.Tensor, eps_pos: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̂ = ε_neg + scale·(ε_pos − ε_neg) (supplementary eq. 1); all tensors [B, ...]."""
    return eps_neg + scale * (eps_pos - eps_neg)


def perpendicular_component(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample component of x orthogonal to y: x − ⟨x, y⟩/max(‖y‖², 1e-6)·y, with x, y [B, ...] → [B, ...]."""
    dims = tuple(range(1, x.dim()))
    dot = (x * y).sum(dim=dims, keepdim=True)
    norm_sq = (y * y).sum(dim=dims, keepdim=True).clamp_min(_MIN_NORM_SQ)
    return x - dot / norm_sq * y


def perp_neg_combine(
    eps_neg: torch.Tensor,
    eps_pos: torch.Tensor,
    eps_views: torch.Tensor,
    weights: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Perp-Neg guided noise (module docstring).

    Args:
        eps_neg: [B, ...] ε(x, y_neg), the unconditional branch.
        eps_pos: [B, ...] ε(x, y) for the (view-interpolated) positive prompt.
        eps_views: [K, B, ...] ε(x, y_k) for the K negative view prompts.
        weights: [B, K] Perp-Neg weights w_k (negative numbers push away from view k).
        scale: guidance scale gs.

    Returns:
        [B, ...] ε̂.
    """
    d_pos = eps_pos - eps_neg
    total = d_pos.clone()
    for k in range(eps_views.shape[0]):
        w = weights[:, k].reshape(-1, *([1] * (d_pos.dim() - 1))).to(d_pos.dtype)
        total = total + w * perpendicular_component(eps_views[k] - eps_neg, d_pos)
    return eps_neg + scale * total


def guided_noise(
    prior: DiffusionPrior,
    x_t: torch.Tensor,
    t: int,
    azimuth_deg: torch.Tensor,
    prompts: PromptEmbeddings,
    guidance_scale: float,
    config: GuidanceConfig,
    control: torch.Tensor | None = None,
) -> torch.Tensor:
    """Guided ε̂ at (x_t, t) for C views: CFG on the negative prompt, or Perp-Neg when ``config.perp_neg``.

    All branches (negative, positive and, with Perp-Neg, the front and side view prompts) go through one batched
    ``prior.predict_noise`` call of 2C (or 4C) samples, without gradient.

    Args:
        x_t: [C, ...] noisy samples (all at timestep t).
        azimuth_deg: [C] camera azimuths (select the view prompts and the Perp-Neg weights).
        control: optional [C, H, W, 3] control images, repeated for every branch.

    Returns:
        [C, ...] ε̂, detached.
    """
    C = x_t.shape[0]
    negative = prompts.negative.expand(C, *prompts.negative.shape[1:])
    conds = [negative, prompts.positive(azimuth_deg)]
    if config.perp_neg:
        for view in (0, 1):  # front, side: the negative directions of perp_neg_weights
            conds.append(prompts.views[view : view + 1].expand(C, *prompts.views.shape[1:]))
    n = len(conds)
    with torch.no_grad():
        eps = prior.predict_noise(
            x_t.detach().repeat(n, *([1] * (x_t.dim() - 1))),
            torch.full((n * C,), t, dtype=torch.long, device=x_t.device),
            torch.cat(conds, dim=0),
            None if control is None else control.repeat(n, *([1] * (control.dim() - 1))),
        ).reshape(n, C, *x_t.shape[1:])
    if not config.perp_neg:
        return cfg_combine(eps[0], eps[1], guidance_scale)
    weights = perp_neg_weights(azimuth_deg, config.perp_neg_weight, config.front_decay, config.side_decay)
    return perp_neg_combine(eps[0], eps[1], eps[2:], weights.to(x_t.device), guidance_scale)
