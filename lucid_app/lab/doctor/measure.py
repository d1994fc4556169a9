"""The prior doctor: on this prior, does a guidance pull a clean image back when it is disturbed, or push it away?

For a guidance g (:class:`~lucid_app.guidance.base.Guidance`), clean views x₀ [C, ...] in the prior's space and a
small perturbation d [C, ...], at a forced timestep t (ISM's interval forced to ``config.delta_t``,
s = max(t − δ_T, 0)) and with COMMON noise seeds (the same generator seed for g(x₀ + d) and g(x₀)):

1. Restoring coefficient r = ⟨d, E[g(x₀+d) − g(x₀)]⟩ / (λ‖d‖²), λ = ``config.lambda_guidance``, the expectation
   over seeds. Descent moves x₀ along −g, so r > 0 removes the deviation and r < 0 amplifies it.
2. Gains along the method's own path: gain = ⟨d, E[Δx̂₀]⟩/‖d‖², Δ the difference between the perturbed and the clean
   evaluation of one x̂₀ preview (``GuidanceOutput.previews``): ISM's gain_s from ``target_x0`` = x̂₀(x_s) and its
   gain_t from ``pred_x0`` = x̂₀ᶜᶠᵍ(x_t); SDS's and SDI's gain_t from ``pred_x0``.
3. The identities that tie them (exact, x_t being one DDIM step from x_s with ε̂_s for ISM, and
   x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε for SDS): ISM's grad = λ(x̂₀(x_s) − x̂₀ᶜᶠᵍ(x_t)) and SDS's grad = λ(x₀ − x̂₀ᶜᶠᵍ(x_t)),
   so with common seeds r_ISM = gain_s − gain_t and r_SDS = 1 − gain_t (unless the guidance zeroed non-finite
   values: :attr:`DoctorMeasurement.nonfinite` counts the evaluations with any). SDI's grad is λ(x₀ − x̂₀) too,
   but its x_t depends on x₀ through the inversion, so r_SDI = 1 − gain_t holds as well.
4. Verdict per method: "restores" when its r (mean over the perturbations) is > 0 at every measured t, else
   "drifts". ISM needs a contractive denoiser (gain falling with t); SDS only needs gain_t < 1.
5. Where descent settles. The pull p = RMS of E[g(x₀)]/λ at the clean views themselves: how hard the method moves a
   true image (CFG's extrapolation, the denoiser's bias), estimated without the seed noise as
   p² = mean(ḡ²) − mean(var g)/n over the n clean evaluations (seeds × perturbation blocks, each its own noise). To
   first order the method's fixed point lies where the restoring force cancels the pull, at an RMS distance
   offset = p / r from the true image (∞ where r ≤ 0): a method that restores weakly (small r) settles far from
   the data even when it restores, and one whose pull is large does too.

Perturbations (:func:`perturbation`), each scaled to the same RMS amplitude per view: ``white`` (i.i.d. normal)
and ``lowfreq`` (normal noise at 1/:data:`LOWFREQ_DIVISOR` of the side, bilinear-upsampled). All perturbations are
measured in one batch: the clean batch is x₀ repeated once per perturbation, so each row keeps its own noise and
the clean and perturbed calls share it row for row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from lucid_app.config import GuidanceConfig
from lucid_app.guidance import GUIDANCES
from lucid_app.guidance.prompts import PromptEmbeddings
from lucid_app.lab.doctor.defaults import (
    DEFAULT_AMPLITUDE,
    DEFAULT_SEEDS,
    DEFAULT_TIMESTEPS,
    METHODS,
)
from lucid_app.priors.base import DiffusionPrior

Perturbation = Literal["white", "lowfreq"]
PERTURBATIONS: tuple[Perturbation, ...] = ("white", "lowfreq")
# Which preview gives which gain, per method (module docstring, 2).
METHOD_PREVIEWS: dict[str, dict[str, str]] = {
    "ism": {"s": "target_x0", "t": "pred_x0"},
    "sds": {"t": "pred_x0"},
    "sdi": {"t": "pred_x0"},
}
LOWFREQ_DIVISOR = 8
# The step the guidance is told: only its schedules read it, and t and δ_T are forced here.
FORCED_STEP = 1
VERDICTS = ("restores", "drifts")


@dataclass(frozen=True)
class DoctorSettings:
    """What to measure: timestep indices, methods (keys of :data:`METHOD_PREVIEWS`), noise seeds 0..seeds−1, the
    perturbation kinds, their RMS amplitude per view, and the seed of their generator."""

    timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS
    methods: tuple[str, ...] = METHODS
    seeds: int = DEFAULT_SEEDS
    perturbations: tuple[Perturbation, ...] = PERTURBATIONS
    amplitude: float = DEFAULT_AMPLITUDE
    perturbation_seed: int = 0

    def check(self, num_train_timesteps: int) -> None:
        """Raises ValueError (naming the valid values) for anything that cannot be measured."""
        unknown = [m for m in self.methods if m not in METHOD_PREVIEWS]
        if unknown or not self.methods:
            raise ValueError(f"doctor: unknown or no method {unknown}; valid: {', '.join(METHOD_PREVIEWS)}")
        bad = [t for t in self.timesteps if not 1 <= t < num_train_timesteps]
        if bad or not self.timesteps:
            raise ValueError(f"doctor: timesteps must lie in [1, {num_train_timesteps}), got {list(self.timesteps)}")
        wrong = [p for p in self.perturbations if p not in PERTURBATIONS]
        if wrong or not self.perturbations:
            raise ValueError(f"doctor: unknown or no perturbation {wrong}; valid: {', '.join(PERTURBATIONS)}")
        if self.seeds < 1 or not self.amplitude > 0:
            raise ValueError(f"doctor: seeds must be >= 1 and the amplitude > 0, got {self.seeds}, {self.amplitude}")

    @property
    def evaluations(self) -> int:
        """Guidance calls a measurement makes (clean and perturbed, per method, t and seed)."""
        return 2 * len(self.methods) * len(self.timesteps) * self.seeds


def _rms_per_view(x: torch.Tensor) -> torch.Tensor:
    return x.square().flatten(1).mean(dim=1).sqrt().reshape(-1, *([1] * (x.dim() - 1)))


def perturbation(kind: Perturbation, like: torch.Tensor, amplitude: float, generator: torch.Generator) -> torch.Tensor:
    """A perturbation d shaped like x₀ [C, ch, H, W] with RMS ``amplitude`` in every view.

    ``white``: i.i.d. N(0, 1); ``lowfreq``: N(0, 1) at [C, ch, ⌈H/8⌉, ⌈W/8⌉] (:data:`LOWFREQ_DIVISOR`), bilinearly
    upsampled to H × W. Drawn on the CPU from ``generator``, in float64, returned in ``like``'s dtype and device.

    Raises:
        ValueError: an unknown kind, or ``lowfreq`` for x₀ without two spatial dimensions.
    """
    shape = tuple(like.shape)
    if kind == "white":
        z = torch.randn(shape, generator=generator, dtype=torch.float64)
    elif kind == "lowfreq":
        if len(shape) != 4:
            raise ValueError(f"lowfreq perturbation needs x0 [C, ch, H, W], got shape {shape}")
        low = [max(1, -(-side // LOWFREQ_DIVISOR)) for side in shape[2:]]
        z = torch.randn((*shape[:2], *low), generator=generator, dtype=torch.float64)
        z = F.interpolate(z, size=shape[2:], mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}")
    return (z * amplitude / _rms_per_view(z)).to(device=like.device, dtype=like.dtype)


@dataclass
class DoctorMeasurement:
    """The raw numbers, one value per noise seed.

    Attributes:
        restoring: perturbation → method → t → [seeds] r.
        gain: perturbation → method → "s" / "t" → t → [seeds] gain.
        pull: method → t → p, the pull at the clean views (module docstring, 5), in x₀ units per λ.
        nonfinite: evaluations whose gradient or previews held a non-finite value (the guidance zeroes them in
            the gradient, which breaks the identities).
    """

    settings: DoctorSettings
    restoring: dict[str, dict[str, dict[int, list[float]]]] = field(default_factory=dict)
    gain: dict[str, dict[str, dict[str, dict[int, list[float]]]]] = field(default_factory=dict)
    pull: dict[str, dict[int, float]] = field(default_factory=dict)
    nonfinite: int = 0

    def mean_restoring(self, method: str, t: int, kind: str | None = None) -> float:
        """r averaged over seeds, and over the perturbations unless ``kind`` names one."""
        kinds = [kind] if kind is not None else list(self.settings.perturbations)
        values = [sum(self.restoring[k][method][t]) / len(self.restoring[k][method][t]) for k in kinds]
        return sum(values) / len(values)

    def mean_gain(self, method: str, which: str, t: int, kind: str | None = None) -> float:
        """A gain averaged over seeds, and over the perturbations unless ``kind`` names one."""
        kinds = [kind] if kind is not None else list(self.settings.perturbations)
        values = [sum(self.gain[k][method][which][t]) / len(self.gain[k][method][which][t]) for k in kinds]
        return sum(values) / len(values)

    def offset(self, method: str, t: int) -> float:
        """The first-order distance of the method's fixed point from the clean views, p / r (module docstring,
        5); ∞ where r ≤ 0 (no fixed point near them)."""
        r = self.mean_restoring(method, t)
        return self.pull[method][t] / r if r > 0 else math.inf

    def verdict(self, method: str) -> str:
        """"restores" when the mean r is > 0 at every measured t, else "drifts"."""
        positive = all(self.mean_restoring(method, t) > 0 for t in self.settings.timesteps)
        return VERDICTS[0] if positive else VERDICTS[1]


def _inner(d: torch.Tensor, delta: torch.Tensor) -> float:
    return float((d.double() * delta.double()).sum())


def pull_without_noise(samples: torch.Tensor) -> float:
    """RMS of the mean of ``samples`` [n, ...] with the noise of the mean removed: sqrt(max(mean(ḡ²) −
    mean(s²)/n, 0)), s² the unbiased per-element variance over the n samples (the plain RMS of the one sample
    when n = 1)."""
    samples = samples.double()
    mean_sq = float(samples.mean(dim=0).square().mean())
    if samples.shape[0] < 2:
        return math.sqrt(mean_sq)
    noise = float(samples.var(dim=0, unbiased=True).mean()) / samples.shape[0]
    return math.sqrt(max(mean_sq - noise, 0.0))


def measure(
    prior: DiffusionPrior,
    x0: torch.Tensor,
    azimuth_deg: torch.Tensor,
    prompts: PromptEmbeddings,
    config: GuidanceConfig,
    settings: DoctorSettings = DoctorSettings(),
    control: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DoctorMeasurement:
    """Restoring coefficients and gains (module docstring) of each method at each t.

    Args:
        prior: any diffusion prior.
        x0: [C, ...] clean views in the prior's space.
        azimuth_deg: [C] their cameras' azimuths (view prompts).
        prompts: the encoded prompts (:func:`lucid_app.guidance.prompts.encode_prompt_set`).
        config: the guidance settings (CFG scale, λ, δ_T, inversions); ``delta_t`` is ISM's forced interval.
        settings: what to measure.
        control: the prior's per-view ``control`` (camera directions of a camera-conditioned prior), or None.
        progress: called as ``progress(done, settings.evaluations)`` before the first call and after each one.

    Returns:
        :class:`DoctorMeasurement`.

    Raises:
        ValueError: settings that cannot be measured (:meth:`DoctorSettings.check`).
    """
    settings.check(prior.num_train_timesteps)
    report = progress or (lambda done, total: None)
    total, done = settings.evaluations, 0
    report(done, total)
    x0 = x0.detach()
    kinds = settings.perturbations
    views = x0.shape[0]
    gen = torch.Generator().manual_seed(settings.perturbation_seed)
    d = torch.cat([perturbation(kind, x0, settings.amplitude, gen) for kind in kinds])
    clean = x0.repeat(len(kinds), *([1] * (x0.dim() - 1)))
    azimuths = azimuth_deg.repeat(len(kinds))
    controls = None if control is None else control.repeat(len(kinds), *([1] * (control.dim() - 1)))
    lam = config.lambda_guidance
    out = DoctorMeasurement(settings)
    for kind in kinds:
        out.restoring[kind] = {m: {t: [] for t in settings.timesteps} for m in settings.methods}
        out.gain[kind] = {m: {w: {t: [] for t in settings.timesteps} for w in METHOD_PREVIEWS[m]}
                          for m in settings.methods}
    for method in settings.methods:
        guidance = GUIDANCES[method]
        out.pull[method] = {}
        for t in settings.timesteps:
            at_clean = []
            for seed in range(settings.seeds):
                evaluations = []
                for x in (clean, clean + d):
                    generator = torch.Generator(device=x.device).manual_seed(seed)
                    evaluations.append(guidance(prior, x, azimuths, prompts, FORCED_STEP, config, generator,
                                                delta_t=config.delta_t, control=controls, return_previews=True, t=t))
                    done += 1
                    report(done, total)
                base, moved = evaluations
                tensors = [base.grad, moved.grad, *base.previews.values(), *moved.previews.values()]
                out.nonfinite += int(not all(bool(torch.isfinite(x).all()) for x in tensors))
                for k, kind in enumerate(kinds):
                    rows = slice(k * views, (k + 1) * views)
                    at_clean.append(base.grad[rows].detach().double().cpu() / lam)
                    d_k = d[rows]
                    norm = _inner(d_k, d_k)
                    out.restoring[kind][method][t].append(
                        _inner(d_k, moved.grad[rows] - base.grad[rows]) / (lam * norm))
                    for which, name in METHOD_PREVIEWS[method].items():
                        delta = moved.previews[name][rows] - base.previews[name][rows]
                        out.gain[kind][method][which][t].append(_inner(d_k, delta) / norm)
            out.pull[method][t] = pull_without_noise(torch.stack(at_clean))
    return out
