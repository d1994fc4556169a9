"""A diffusion model's output as ε̂, whatever it was trained to predict (diffusers' ``prediction_type``): the one
conversion every prior applies before guidance sees its prediction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from lucid_app.priors.base import PriorError


def broadcast_alpha(alpha: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """ᾱ as a tensor broadcastable against ``like`` [B, ...] (a [B] tensor becomes [B, 1, ..., 1])."""
    alpha = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    if alpha.dim() == 1:
        alpha = alpha.reshape(-1, *([1] * (like.dim() - 1)))
    return alpha


PredictionType = Literal["epsilon", "v_prediction", "sample"]


def noise_from_model_output(
    output: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor | float, prediction_type: PredictionType
) -> torch.Tensor:
    """ε̂ from a diffusion model's output, whatever it was trained to predict (diffusers' ``prediction_type``).

    With x_t = √ᾱ·x₀ + √(1−ᾱ)·ε:
    - ``epsilon``: the output is ε̂;
    - ``v_prediction`` (Salimans & Ho 2022, eq. after §4: v = √ᾱ·ε − √(1−ᾱ)·x₀): ε̂ = √ᾱ·v̂ + √(1−ᾱ)·x_t;
    - ``sample``: the output is x̂₀, so ε̂ = (x_t − √ᾱ·x̂₀)/√(1−ᾱ).
    Computed in at least float32 and returned in ``output``'s dtype.

    Args:
        output: [B, ...] the model's output at (x_t, t).
        x_t: [B, ...] its input.
        alpha: ᾱ_t, scalar or [B].
        prediction_type: what the model predicts.

    Returns:
        [B, ...] ε̂.

    Raises:
        ValueError: an unknown ``prediction_type``.
    """
    if prediction_type == "epsilon":
        return output
    wide = torch.promote_types(output.dtype, torch.float32)
    out, x = output.to(wide), x_t.to(wide)
    a = broadcast_alpha(alpha, out)
    if prediction_type == "v_prediction":
        eps = a.sqrt() * out + (1.0 - a).sqrt() * x
    elif prediction_type == "sample":
        eps = (x - a.sqrt() * out) / (1.0 - a).sqrt()
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}: expected epsilon, v_prediction or sample")
    return eps.to(output.dtype)


def prediction_type_of(scheduler_config: Mapping[str, object]) -> PredictionType:
    """The scheduler config's ``prediction_type`` (what the UNet predicts), checked.

    Raises:
        PriorError: a type the guidance cannot convert to ε.
    """
    kind = dict(scheduler_config).get("prediction_type") or "epsilon"
    if kind not in ("epsilon", "v_prediction", "sample"):
        raise PriorError(f"unsupported scheduler prediction_type {kind!r}: expected epsilon, v_prediction or sample")
    return kind
