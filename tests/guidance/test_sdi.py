"""SDI (Score Distillation via Inversion): closed forms on a Dirac prior (exact DDIM inversion), the one-step
formula and a step-by-step reference on the linear prior, the annealing schedule, and the config."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from lucid_app.config import ConfigError, GuidanceConfig, PromptConfig, TrainConfig, apply_overrides
from lucid_app.guidance import GUIDANCES
from lucid_app.guidance.ddim import ddim_invert, sdi_t_bounds_at
from lucid_app.guidance.prompts import encode_prompt_set
from lucid_app.guidance.sdi import sdi_guidance, sdi_indices, sdi_noise
from tests.helpers import LinearPrior, ddim_step, linear_eps, linear_prompts


@functools.cache
def sd_alphas() -> torch.Tensor:
    """ᾱ of SD's scaled-linear schedule, from diffusers (imported here: collecting the tests stays light)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod


class DiracPrior(torch.nn.Module):
    """The exact denoiser of a point mass at y(c): ε̂(x, t, c) = (x − √ᾱ_t·y(c))/√(1−ᾱ_t), y(c) one value per channel.

    Its x̂₀ is y(c) at every (x, t), so a DDIM step never changes x̂₀ and DDIM inversion solves the probability-flow
    ODE exactly in any number of steps. A CFG combination at scale g is the denoiser of the point mass at
    y_neg + g·(y_pos − y_neg), for any g (negative ones included).
    """

    def __init__(self) -> None:
        super().__init__()
        self.name = "dirac"
        self.device = torch.device("cpu")
        self.alphas_cumprod = sd_alphas().double()
        self.num_train_timesteps = 1000
        self.calls: list[int] = []

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[0.1 * len(t) - 1.0, 0.3, -0.05 * len(t), 0.5] for t in texts], dtype=torch.float64)

    def predict_noise(self, x_t, t, cond, control=None):  # noqa: ANN001, ANN201 - protocol signature
        assert not torch.is_grad_enabled() and not x_t.requires_grad
        self.calls.append(int(x_t.shape[0]))
        a = self.alphas_cumprod[t].reshape(-1, *([1] * (x_t.dim() - 1))).to(x_t.dtype)
        y = cond.reshape(*cond.shape, *([1] * (x_t.dim() - 2))).to(x_t.dtype)
        return (x_t - a.sqrt() * y) / (1 - a).sqrt()


def _dirac_setup() -> tuple[DiracPrior, object, torch.Tensor, torch.Tensor, torch.Tensor]:
    prior = DiracPrior()
    prompts = encode_prompt_set(prior, PromptConfig(text="a cat", negative="blurry photo", view_dependent=False))
    x0 = torch.randn(2, 4, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y_pos = prompts.base.reshape(1, 4, 1, 1)
    y_neg = prompts.negative.reshape(1, 4, 1, 1)
    return prior, prompts, x0, y_pos, y_neg


@pytest.mark.parametrize("n_steps", [1, 3, 10])
@pytest.mark.parametrize("t", [1, 250, 617, 999])
def test_exact_inversion_reproduces_x_t(n_steps: int, t: int) -> None:
    """Dirac prior: x_t is the exact ODE solution from x₀ at index 0 whatever the number of steps, and
    x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε_inv."""
    prior, prompts, x0, y_pos, y_neg = _dirac_setup()
    g_inv = -7.5
    cfg = GuidanceConfig(sdi_inversion_steps=n_steps, sdi_eta=0.0, sdi_inversion_guidance_scale=g_inv)
    x_t, eps_inv = sdi_noise(prior, x0, t, torch.zeros(2), prompts, cfg, torch.Generator().manual_seed(1))
    a0, at = float(sd_alphas()[0]), float(sd_alphas()[t])
    y_inv = y_neg + g_inv * (y_pos - y_neg)
    expected = math.sqrt(at) * y_inv + math.sqrt(1 - at) * (x0 - math.sqrt(a0) * y_inv) / math.sqrt(1 - a0)
    torch.testing.assert_close(x_t, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x_t, math.sqrt(at) * x0 + math.sqrt(1 - at) * eps_inv, rtol=1e-12, atol=1e-12)
    # One batched call (negative + positive branches) per inversion step, at most n steps.
    assert prior.calls == [4] * len(sdi_indices(t, n_steps, 1000)[1:]) and len(prior.calls) <= n_steps


@pytest.mark.parametrize("eta", [0.0, 0.3])
def test_dirac_gradient_is_lambda_times_x0_minus_the_guided_point(eta: float) -> None:
    """grad = λ·w(t)·(ε̂ − ε_inv) = λ·(x₀ − x̂₀(x_t)), and x̂₀ = y_neg + gs·(y_pos − y_neg) wherever x_t lands."""
    prior, prompts, x0, y_pos, y_neg = _dirac_setup()
    cfg = GuidanceConfig(lambda_guidance=0.4, guidance_scale=5.0, sdi_eta=eta)
    x0 = x0.clone().requires_grad_(True)
    for step in (1, 2500, 6000):
        out = sdi_guidance(prior, x0, torch.zeros(2), prompts, step, cfg, torch.Generator().manual_seed(step),
                           return_previews=True)
        target = y_neg + 5.0 * (y_pos - y_neg)
        torch.testing.assert_close(out.grad, 0.4 * (x0.detach() - target), rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(out.previews["pred_x0"], target.expand_as(x0), rtol=1e-7, atol=1e-7)
        (x0_grad,) = torch.autograd.grad(out.loss, x0)
        torch.testing.assert_close(x0_grad, out.grad)  # float64 x₀: the loss sums in float32 (base.gradient_loss)
        lo, hi = sdi_t_bounds_at(step, cfg, 1000)
        assert lo <= out.diagnostics["t"] < hi and out.diagnostics["s"] == out.diagnostics["t"]
        assert out.diagnostics["delta_t"] == 0.0


@pytest.mark.parametrize("t", [None, 430, 0])
def test_one_inversion_step_matches_the_closed_form(t: int | None) -> None:
    """n = 1, η = 0: ε_inv = (1 − γ₀/γ_t)·ε̂₀ + (1/√ᾱ₀ − 1)/γ_t·x₀ with ε̂₀ the guided inversion prediction at (x₀, 0)."""
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    g_inv, gs, lam = -7.5, 6.0, 0.3
    cfg = GuidanceConfig(sdi_inversion_steps=1, sdi_eta=0.0, sdi_inversion_guidance_scale=g_inv, guidance_scale=gs,
                         lambda_guidance=lam)
    x0 = torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    az = torch.tensor([0.0, 180.0])
    out = sdi_guidance(prior, x0, az, prompts, 100, cfg, torch.Generator().manual_seed(8), t=t)
    calls = list(prior.calls)
    # Independent computation: t as drawn (uniform in the annealed range at step 100), then the formula.
    g = torch.Generator().manual_seed(8)
    lo, hi = 250 + int((1 - 100 / 5000) * 730), 1000  # 965; the jitter ⌈T/1⌉ reaches T
    t_ref = int(torch.randint(lo, hi, (1,), generator=g)) if t is None else t
    positive = torch.cat([prompts.views[0:1], prompts.views[2:3]])  # front at 0°, back at 180°
    a0, at = float(prior.alphas_cumprod[0]), float(prior.alphas_cumprod[t_ref])
    x = x0.detach()
    with torch.no_grad():
        e_neg0, e_pos0 = linear_eps(prior, x, 0, prompts.negative), prior.predict_noise(x, torch.zeros(2), positive)
    eps0 = e_neg0 + g_inv * (e_pos0 - e_neg0)
    gamma0, gamma_t = math.sqrt((1 - a0) / a0), math.sqrt((1 - at) / at)
    eps_inv = (1 - gamma0 / gamma_t) * eps0 + (1 / math.sqrt(a0) - 1) / gamma_t * x
    x_t = math.sqrt(at) * x + math.sqrt(1 - at) * eps_inv
    with torch.no_grad():
        e_neg, e_pos = linear_eps(prior, x_t, t_ref, prompts.negative), prior.predict_noise(
            x_t, torch.full((2,), t_ref), positive)
    expected = lam * gamma_t * (e_neg + gs * (e_pos - e_neg) - eps_inv)
    assert out.diagnostics["t"] == t_ref
    torch.testing.assert_close(out.grad, expected, rtol=1e-4, atol=1e-5)
    assert calls == ([4, 4] if t_ref > 0 else [4])  # one inversion step (none at t = 0), then the prediction


def test_sdi_equals_step_by_step_reference_with_eta_noise() -> None:
    """n = 10, η = 0.3: the inversion written out (same draws: t, then z per step) and the official "added" noise
    η·√((1−ᾱ_a)/(1−ᾱ_b)·(1−ᾱ_b/ᾱ_a))·z after each deterministic step."""
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    cfg = GuidanceConfig(perp_neg=False, sdi_anneal_steps=5000)
    x0 = torch.randn(2, 4, 3, 7, generator=torch.Generator().manual_seed(2), requires_grad=True)
    az = torch.tensor([0.0, 180.0])
    step = 3000
    out = sdi_guidance(prior, x0, az, prompts, step, cfg, torch.Generator().manual_seed(4))
    calls = list(prior.calls)
    g = torch.Generator().manual_seed(4)
    lo = 250 + int((1 - step / 5000) * 730)
    t = int(torch.randint(lo, lo + 100, (1,), generator=g))
    ac = [float(a) for a in prior.alphas_cumprod]
    positive = torch.cat([prompts.views[0:1], prompts.views[2:3]])

    def guided(x: torch.Tensor, idx: int, scale: float) -> torch.Tensor:
        with torch.no_grad():
            e_neg = linear_eps(prior, x, idx, prompts.negative)
            e_pos = prior.predict_noise(x, torch.full((2,), idx), positive)
        return e_neg + scale * (e_pos - e_neg)

    x, cur = x0.detach(), 0
    while cur < t:
        nxt = min(cur + 100, t)
        x = ddim_step(x, guided(x, cur, -7.5), ac[cur], ac[nxt])
        sigma = math.sqrt((1 - ac[cur]) / (1 - ac[nxt]) * (1 - ac[nxt] / ac[cur]))
        x = x + 0.3 * sigma * torch.randn(x.shape, generator=g)
        cur = nxt
    eps_inv = (x - math.sqrt(ac[t]) * x0.detach()) / math.sqrt(1 - ac[t])
    expected = 0.1 * math.sqrt((1 - ac[t]) / ac[t]) * (guided(x, t, 7.5) - eps_inv)
    assert out.diagnostics["t"] == t
    torch.testing.assert_close(out.grad, expected, rtol=1e-4, atol=1e-5)
    assert calls == [4] * (math.ceil(t / 100) + 1)  # batched: negative + positive of 2 views


def test_schedule_endpoints_and_monotone_annealing() -> None:
    assert sdi_t_bounds_at(0, GuidanceConfig(), 1000) == (250, 350)  # 0 = the run's length, set by the trainer
    cfg = GuidanceConfig(sdi_anneal_steps=5000)
    assert sdi_t_bounds_at(0, cfg, 1000) == (980, 1000)
    assert sdi_t_bounds_at(2500, cfg, 1000) == (250 + 365, 715)
    assert sdi_t_bounds_at(5000, cfg, 1000) == (250, 350)
    assert sdi_t_bounds_at(4999, cfg, 1000)[0] == 250  # ⌊(1/5000)·730⌋ = 0: at the low end one step early
    assert sdi_t_bounds_at(4993, cfg, 1000)[0] == 251
    assert sdi_t_bounds_at(20000, cfg, 1000) == (250, 350)  # stays at the low end after the annealing
    lows = [sdi_t_bounds_at(k, cfg, 1000)[0] for k in range(0, 6000, 7)]
    assert all(a >= b for a, b in zip(lows, lows[1:]))
    short = GuidanceConfig(sdi_anneal_steps=30, sdi_t_range=(0.02, 0.98), sdi_inversion_steps=4)
    assert sdi_t_bounds_at(0, short, 1000) == (980, 1000) and sdi_t_bounds_at(30, short, 1000) == (20, 270)
    assert sdi_t_bounds_at(0, GuidanceConfig(sdi_t_range=(1.0, 1.0)), 1000) == (999, 1000)  # t < T always
    assert sdi_indices(450, 10, 1000) == [0, 100, 200, 300, 400, 450]
    assert sdi_indices(0, 10, 1000) == [0] and sdi_indices(999, 7, 1000)[:2] == [0, 143]
    assert len(sdi_indices(999, 7, 1000)) - 1 == 7


def test_same_seed_same_result_and_eta_zero_is_deterministic() -> None:
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    az = torch.tensor([30.0, -60.0])
    cfg = GuidanceConfig()
    outs = [sdi_guidance(prior, x0.requires_grad_(True), az, prompts, 700, cfg, torch.Generator().manual_seed(s),
                         t=600) for s in (1, 1, 2)]
    runs = [out.grad for out in outs]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])  # η noise from the generator
    (x0_grad,) = torch.autograd.grad(outs[0].loss, x0)
    assert torch.equal(x0_grad, runs[0])  # d loss / d x₀ is exactly the injected gradient
    still = GuidanceConfig(sdi_eta=0.0)
    a, b = (sdi_guidance(prior, x0, az, prompts, 700, still, torch.Generator().manual_seed(s), t=600).grad
            for s in (1, 2))
    assert torch.equal(a, b)  # forced t, η = 0: nothing is drawn


def test_added_eta_needs_a_generator() -> None:
    with pytest.raises(ValueError, match="Generator"):
        ddim_invert(torch.zeros(1, 1), [0, 10], sd_alphas(), lambda x, a: x, eta=0.3, eta_mode="added")


def test_sdi_is_registered_and_configurable() -> None:
    assert GUIDANCES["sdi"] is sdi_guidance
    config = apply_overrides(TrainConfig(), ["guidance.method=sdi", "guidance.sdi_inversion_steps=4",
                                             "guidance.sdi_inversion_guidance_scale=-3", "guidance.sdi_eta=0",
                                             "guidance.sdi_t_range=[0.2, 0.9]", "guidance.sdi_anneal_steps=800"])
    g = config.guidance
    assert (g.method, g.sdi_inversion_steps, g.sdi_inversion_guidance_scale, g.sdi_eta) == ("sdi", 4, -3.0, 0.0)
    assert g.sdi_t_range == (0.2, 0.9) and g.sdi_anneal_steps == 800
    for bad in ("guidance.sdi_inversion_steps=0", "guidance.sdi_eta=1.5", "guidance.sdi_t_range=[0.9, 0.2]",
                "guidance.sdi_inversion_guidance_scale=-101", "guidance.sdi_anneal_steps=-1"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].split(".")[1]):
            apply_overrides(TrainConfig(), [bad])
