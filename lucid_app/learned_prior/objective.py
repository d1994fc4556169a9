"""The learned prior's training objective: what the UNet predicts and how each timestep's loss is weighted.

With x_t = √ᾱ·x₀ + √(1−ᾱ)·ε and SNR(t) = ᾱ_t/(1−ᾱ_t), the three parametrisations diffusers knows
(``DDPMScheduler.prediction_type``) regress different targets, and each squared error is the x₀-space error
‖x̂₀ − x₀‖² times a factor of t:
- ``epsilon`` (DDPM, Ho et al. 2020 eq. 14): target ε, ‖ε̂ − ε‖² = SNR·‖x̂₀ − x₀‖²;
- ``v_prediction`` (Salimans & Ho 2022, §4): target v = √ᾱ·ε − √(1−ᾱ)·x₀, ‖v̂ − v‖² = (SNR + 1)·‖x̂₀ − x₀‖²;
- ``sample``: target x₀ itself, weight 1.

Why the choice matters to ISM (DESIGN §5b): an ε-model's x̂₀ = (x_t − √(1−ᾱ)·ε̂)/√ᾱ multiplies any error of ε̂'s
Jacobian by √((1−ᾱ)/ᾱ) = 1/√SNR, which grows with t, whereas an x₀-model's Jacobian error reaches x̂₀ unscaled.

Min-SNR-γ weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 6)
makes the x₀-space weight min(SNR, γ) whatever the parametrisation, so the per-sample factor on the
parametrisation's own loss is min(SNR, γ)/SNR (ε), min(SNR, γ)/(SNR + 1) (v) or min(SNR, γ) (x₀); γ = 0 turns it
off (every factor 1).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Prediction = Literal["epsilon", "v_prediction", "sample"]
PREDICTIONS: tuple[Prediction, ...] = ("epsilon", "v_prediction", "sample")


def _check(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}: expected one of {', '.join(PREDICTIONS)}")


def _per_sample(alpha: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return alpha.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def training_target(x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, prediction: Prediction) -> torch.Tensor:
    """What the UNet regresses at x_t = √ᾱ·x₀ + √(1−ᾱ)·ε (module docstring).

    Args:
        x0: [B, ...] clean samples.
        noise: [B, ...] the ε that made x_t.
        alpha: [B] ᾱ_t of each sample.
        prediction: the parametrisation.

    Returns:
        [B, ...] ε, v or x₀.

    Raises:
        ValueError: an unknown ``prediction``.
    """
    _check(prediction)
    if prediction == "epsilon":
        return noise
    if prediction == "sample":
        return x0
    a = _per_sample(alpha, x0)
    return a.sqrt() * noise - (1.0 - a).sqrt() * x0


def loss_weight(alpha: torch.Tensor, prediction: Prediction, snr_gamma: float) -> torch.Tensor:
    """[B] min-SNR-γ factor on each sample's loss in ``prediction``'s own space (module docstring); ones for γ = 0.

    Raises:
        ValueError: an unknown ``prediction`` or a negative γ.
    """
    _check(prediction)
    if snr_gamma < 0:
        raise ValueError(f"snr_gamma must be >= 0 (0 = off), got {snr_gamma}")
    if snr_gamma == 0:
        return torch.ones_like(alpha)
    snr = alpha / (1.0 - alpha)
    clipped = snr.clamp(max=snr_gamma)
    if prediction == "epsilon":
        return clipped / snr
    if prediction == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped


def diffusion_loss(
    model_output: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, prediction: Prediction,
    snr_gamma: float,
) -> torch.Tensor:
    """Scalar mean over samples of loss_weight·mean‖output − target‖² (each sample's mean over its elements).

    Without weighting (γ = 0) this is ``F.mse_loss(output, target)`` itself, so an ε-prior trained before these
    options existed resumes bit-identically.
    """
    target = training_target(x0, noise, alpha, prediction)
    if snr_gamma == 0:
        return F.mse_loss(model_output, target)
    per_sample = (model_output.float() - target.float()).square().flatten(1).mean(dim=1)
    return (loss_weight(alpha.float(), prediction, snr_gamma) * per_sample).mean()
