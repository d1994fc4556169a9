"""DDIM maths, the DDIM inversion loop and the timestep schedules of ISM and SDI, as pure functions on tensors
(DESIGN §4 steps 1-3).

Conventions: ``alpha`` always means ᾱ (the cumulative product ``alphas_cumprod[t]``), given either as a Python
float, a 0-d tensor or a [B] tensor (one value per sample; broadcast over the trailing dimensions of x).
Timesteps are integer indices 0..T-1 of the prior's training schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch

from lucid_app.config import GuidanceConfig
from lucid_app.priors.prediction import broadcast_alpha


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """Forward diffusion q(x_t | x_0) (DDPM eq. 4): x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε.

    Args:
        x0: [B, ...] clean samples.
        noise: [B, ...] standard normal noise ε.
        alpha: ᾱ_t, scalar or [B].

    Returns:
        [B, ...] noisy samples x_t.
    """
    a = broadcast_alpha(alpha, x0)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """The x₀ estimate of DDIM eq. 12 ("predicted x₀"): x̂₀ = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t.

    Args:
        x_t: [B, ...] noisy samples at ᾱ_t.
        eps: [B, ...] predicted noise ε̂(x_t, t).
        alpha: ᾱ_t, scalar or [B].

    Returns:
        [B, ...] x̂₀.
    """
    a = broadcast_alpha(alpha, x_t)
    return (x_t - (1.0 - a).sqrt() * eps) / a.sqrt()


def ddim_jump(
    x_a: torch.Tensor,
    eps: torch.Tensor,
    alpha_a: torch.Tensor | float,
    alpha_b: torch.Tensor | float,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One DDIM step between arbitrary timesteps a → b (DDIM eq. 12), forwards (b < a) or as inversion (b > a).

    x̂₀ = (x_a − √(1−ᾱ_a)·ε̂)/√ᾱ_a;  x_b = √ᾱ_b·x̂₀ + √(1−ᾱ_b−σ²)·ε̂ + σ·z, with
    σ = η·√|(1−ᾱ_b)/(1−ᾱ_a)·(1−ᾱ_a/ᾱ_b)| (DDIM eq. 16; the absolute value makes it defined for inversion),
    clamped to σ² ≤ 1−ᾱ_b, and z ~ N(0, I) drawn from ``generator``. With η = 0 (the default, and what ISM uses)
    the step is deterministic and x_b = √ᾱ_b·x̂₀ + √(1−ᾱ_b)·ε̂.

    Args:
        x_a: [B, ...] sample at timestep a.
        eps: [B, ...] ε̂(x_a, a).
        alpha_a: ᾱ_a, scalar or [B].
        alpha_b: ᾱ_b, scalar or [B].
        eta: DDIM stochasticity η ≥ 0.
        generator: source of z; required when ``eta > 0``.

    Returns:
        [B, ...] x_b.
    """
    a = broadcast_alpha(alpha_a, x_a)
    b = broadcast_alpha(alpha_b, x_a)
    x0 = predict_x0(x_a, eps, a)
    if eta <= 0.0:
        return b.sqrt() * x0 + (1.0 - b).sqrt() * eps
    if generator is None:
        raise ValueError("ddim_jump: eta > 0 needs an explicit torch.Generator for the noise term")
    variance = ((1.0 - b) / (1.0 - a) * (1.0 - a / b)).abs()
    sigma2 = torch.minimum((eta**2) * variance, 1.0 - b)
    z = randn_like(x_a, generator)
    return b.sqrt() * x0 + (1.0 - b - sigma2).sqrt() * eps + sigma2.sqrt() * z


def reverse_step_sigma(alpha_a: torch.Tensor | float, alpha_b: torch.Tensor | float) -> torch.Tensor:
    """σ of the DDIM *denoising* step b → a at η = 1 (DDIM eq. 16), for an inversion step a → b (ᾱ_b < ᾱ_a):
    σ = √((1−ᾱ_a)/(1−ᾱ_b)·(1−ᾱ_b/ᾱ_a)) — the noise the matching reverse step would remove (the DDPM posterior
    standard deviation). Scalars or 0-d tensors in, a 0-d tensor out."""
    a = torch.as_tensor(alpha_a)
    b = torch.as_tensor(alpha_b)
    return ((1.0 - a) / (1.0 - b) * (1.0 - b / a)).clamp_min(0.0).sqrt()


EtaMode = Literal["ddim", "added"]


def ddim_invert(
    x: torch.Tensor,
    indices: Sequence[int],
    alphas: torch.Tensor,
    noise_fn: Callable[[torch.Tensor, int], torch.Tensor],
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    eta_mode: EtaMode = "ddim",
) -> torch.Tensor:
    """DDIM inversion along ``indices`` (first to last): one :func:`ddim_jump` a → b per consecutive pair, with
    ε̂ = ``noise_fn(x_a, a)`` — the loop ISM, SDI and the naive objective share.

    η > 0 adds noise in one of two ways (``generator`` draws z ~ N(0, I), one draw per step):
    - ``"ddim"``: DDIM eq. 16 inside the jump (:func:`ddim_jump`'s σ, the direction term shrunk to keep the
      variance); ISM's ``xs_eta``;
    - ``"added"``: the deterministic jump plus η·σ_{b→a}·z with σ_{b→a} = :func:`reverse_step_sigma` (nothing
      shrunk), as SDI's official inversion adds it. (Eq. 16's σ for an inversion step is large — at the first
      step it would replace the whole direction term by fresh noise, i.e. turn SDI back into SDS.)

    Args:
        x: [B, ...] the sample at ``indices[0]``.
        indices: timestep indices, increasing; one index means no step (``x`` is returned as is).
        alphas: [T] ᾱ of the prior's schedule.
        noise_fn: ε̂ at (x [B, ...], index) → [B, ...], without gradient.

    Returns:
        [B, ...] the sample at ``indices[-1]``.
    """
    for a, b in zip(indices[:-1], indices[1:]):
        eps = noise_fn(x, a)
        if eta_mode == "ddim":
            x = ddim_jump(x, eps, alphas[a], alphas[b], eta=eta, generator=generator)
            continue
        x = ddim_jump(x, eps, alphas[a], alphas[b])
        if eta > 0.0:
            if generator is None:
                raise ValueError("ddim_invert: eta > 0 needs an explicit torch.Generator for the noise term")
            x = x + eta * reverse_step_sigma(alphas[a], alphas[b]).to(x.dtype) * randn_like(x, generator)
    return x


def randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device then moved to ``x``'s."""
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def offset_noise_like(x: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
    """ε for the forward process with "offset noise", as the official LucidDreamer ``train_step`` draws it.

    ε = z + offset·o with z ~ N(0, I) shaped like x [B, K, ...] and o ~ N(0, I) of shape [1, K, 1, ..., 1] (one
    value per channel, shared by the batch and every position): a small random shift of each channel's mean.
    ``offset`` = 0 returns z alone (one draw fewer).

    Args:
        x: [B, K, ...] tensor giving the shape, dtype and device.
        offset: weight of the per-channel term (0.1 in the official code).
        generator: the only source of randomness (z first, then o).

    Returns:
        [B, K, ...] noise.
    """
    z = randn_like(x, generator)
    if offset <= 0.0:
        return z
    o = torch.randn((1, x.shape[1], *([1] * (x.dim() - 2))), generator=generator, device=generator.device,
                    dtype=x.dtype).to(x.device)
    return z + offset * o


def snr_weight(alpha: torch.Tensor | float) -> torch.Tensor:
    """ISM/SDS weighting w(t) = √((1−ᾱ_t)/ᾱ_t) (as the reference code weights both; DESIGN §4 step 5)."""
    alpha = torch.as_tensor(alpha)
    return ((1.0 - alpha) / alpha).sqrt()


def warmup_ratio(step: int, warmup_steps: int) -> float:
    """r = 1 − min(step / warmup_steps, 1): 1 at step 0, 0 once warm (DESIGN §4 step 1); 0 if no warm-up."""
    if warmup_steps <= 0:
        return 0.0
    return 1.0 - min(step / warmup_steps, 1.0)


def delta_t_at(step: int, config: GuidanceConfig) -> int:
    """The interval δ_T at ``step``: delta_t + ⌈r·(delta_t_start − delta_t)⌉ when annealing, else delta_t.

    The ceiling matches the reference code, so δ_T is an integer that reaches ``delta_t`` exactly at the end of
    the warm-up (100 → 80 with the defaults).
    """
    if not config.annealing_intervals:
        return int(config.delta_t)
    r = warmup_ratio(step, config.warmup_steps)
    return int(config.delta_t + math.ceil(r * (config.delta_t_start - config.delta_t)))


def t_bounds_at(step: int, config: GuidanceConfig, num_train_timesteps: int) -> tuple[int, int]:
    """Half-open range [lo, hi) of the timestep index t at ``step`` (DESIGN §4 step 1).

    lo = T·t_range[0]; hi = T·t_range[1] + ⌊r·T·(max_t − t_range[1])⌋, so with the defaults t ∈ [20, 980) at
    step 0 narrowing to [20, 500) after the warm-up. Products are rounded before truncation so that float
    representation (0.98 − 0.5 = 0.48000000000000004) cannot shift a bound by one.
    """
    T = num_train_timesteps
    lo = int(round(T * config.t_range[0]))
    hi = int(round(T * config.t_range[1]))
    widen = int(round(T * (config.max_t - config.t_range[1])))
    hi = hi + int(warmup_ratio(step, config.warmup_steps) * widen)
    hi = min(max(hi, lo + 1), T)
    return lo, hi


def sdi_t_bounds_at(step: int, config: GuidanceConfig, num_train_timesteps: int) -> tuple[int, int]:
    """Half-open range [lo, hi) of SDI's timestep at ``step``: linear annealing of t from the top of
    ``sdi_t_range`` to its bottom over ``sdi_anneal_steps``, plus a jitter of one inversion interval.

    lo = t_low + ⌊r·(t_high − t_low)⌋ with t_low, t_high = T·sdi_t_range and r = ``warmup_ratio(step,
    sdi_anneal_steps)`` (1 at step 0, 0 from step ``sdi_anneal_steps`` on); hi = min(lo + ⌈T/n⌉, T), n =
    ``sdi_inversion_steps``. With the defaults t ∈ [980, 1000) at step 0 and [250, 350) from step 5000 on.
    The official code (threestudio ``stable-diffusion-sdi-guidance``, ``t_anneal``) anneals the same line and
    inverts to t + δ, δ uniform in [0, T/n); here δ moves t itself (module :mod:`lucid_app.guidance.sdi`).
    """
    T = num_train_timesteps
    t_low = int(round(T * config.sdi_t_range[0]))
    t_high = min(int(round(T * config.sdi_t_range[1])), T - 1)
    lo = t_low + int(warmup_ratio(step, config.sdi_anneal_steps) * (t_high - t_low))
    lo = min(lo, T - 1)
    return lo, min(lo + inversion_stride(config.sdi_inversion_steps, T), T)


def inversion_stride(n_steps: int, num_train_timesteps: int) -> int:
    """⌈T/n⌉: the index interval of an inversion in n steps that reaches any t < T from index 0 in at most n steps."""
    return -(-num_train_timesteps // n_steps)


def sample_timestep(lo: int, hi: int, generator: torch.Generator) -> int:
    """One integer t uniform in [lo, hi), drawn from ``generator`` (one t for the whole batch)."""
    return int(torch.randint(lo, hi, (1,), generator=generator, device=generator.device).item())


def inversion_schedule(s: int, xs_delta_t: int, xs_inv_steps: int | None = None) -> list[int]:
    """Timestep indices visited by a DDIM inversion x₀ → x_s (DESIGN §4 step 2), first to last.

    Moves in steps of ``xs_delta_t``, the last one shorter so that it ends exactly at s. ISM caps the steps at
    ``xs_inv_steps``, so it starts at max(s − xs_delta_t·xs_inv_steps, 0) (index 0 for every s < 1000 with the
    defaults 200 × 5); with ``xs_inv_steps`` None (the naive objective, stepping by δ_T) it always starts at 0.
    ``[0]`` when s = 0 (no step needed: x₀ noised to index 0 is already x_s).

    Example: s = 450, 200 → [0, 200, 400, 450].
    """
    if s < 0:
        raise ValueError(f"inversion_schedule: s must be >= 0, got {s}")
    if xs_delta_t < 1 or (xs_inv_steps is not None and xs_inv_steps < 1):
        raise ValueError(
            f"inversion_schedule: xs_delta_t and xs_inv_steps must be >= 1, got {xs_delta_t}, {xs_inv_steps}"
        )
    start = 0 if xs_inv_steps is None else max(s - xs_delta_t * xs_inv_steps, 0)
    indices = [start]
    while indices[-1] < s:
        indices.append(min(indices[-1] + xs_delta_t, s))
    return indices
