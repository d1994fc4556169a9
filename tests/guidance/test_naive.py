"""The naive objective (supplementary eq. 2): closed form against ISM, a step-by-step oracle on the tiny UNet."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lucid_app.config import GuidanceConfig, ModelConfig, PromptConfig
from lucid_app.guidance import GUIDANCES
from lucid_app.guidance.ddim import inversion_schedule
from lucid_app.guidance.naive import gamma
from lucid_app.guidance.prompts import encode_prompt_set
from tests.helpers import LinearPrior, linear_prompts


def test_uncapped_inversion_schedule_starts_at_zero() -> None:
    """The naive objective's inversion indices: steps of δ_T from 0 up to t, however many it takes."""
    assert inversion_schedule(450, 200) == [0, 200, 400, 450]
    assert inversion_schedule(150, 200) == [0, 150]
    assert inversion_schedule(0, 50) == [0]
    assert inversion_schedule(1200, 200) == [0, 200, 400, 600, 800, 1000, 1200]
    with pytest.raises(ValueError):
        inversion_schedule(10, 0)


@pytest.mark.parametrize("t", [150, 200])
def test_one_interval_is_ism_with_s_zero_up_to_the_weighting(t: int) -> None:
    """δ_T ≥ t: one inversion step 0 → t and one denoising estimate, so x̃₀ᵗ is ISM's guided x̂₀(x_t, t) and
    grad_naive·γ/ω = λ·(x₀ − x̂₀(x_t)) = grad_ISM + λ·(x₀ − x̂₀(x_s = x₀ noised to 0))."""
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    cfg = GuidanceConfig(lambda_guidance=0.3, denoise_guidance_scale=2.0)
    x0 = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    az = torch.tensor([0.0, 180.0])
    kwargs = {"delta_t": 200, "t": t, "return_previews": True}
    ism = GUIDANCES["ism"](prior, x0, az, prompts, 0, cfg, torch.Generator().manual_seed(1), **kwargs)
    naive = GUIDANCES["naive"](prior, x0, az, prompts, 0, cfg, torch.Generator().manual_seed(1), **kwargs)
    assert ism.diagnostics["s"] == 0 and naive.diagnostics["t"] == ism.diagnostics["t"] == t
    torch.testing.assert_close(naive.previews["pred_x0"], ism.previews["pred_x0"])
    a = prior.alphas_cumprod[t]
    omega_over_gamma = math.sqrt((1 - a) / a) / float(gamma(a))
    assert omega_over_gamma == pytest.approx(1.0)
    expected = ism.grad + 0.3 * (x0 - ism.previews["target_x0"])
    torch.testing.assert_close(naive.grad / omega_over_gamma, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_sd(tiny_sd_dir: Path):  # noqa: ANN201
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    return load_stable_diffusion(str(tiny_sd_dir), ModelConfig(), device="cpu")


def test_multi_step_equals_step_by_step_on_tiny_unet(tiny_sd) -> None:  # noqa: ANN001
    prior = tiny_sd
    prompts = encode_prompt_set(prior, PromptConfig(text="a cat", negative="blurry", view_dependent=False))
    cfg = GuidanceConfig(lambda_guidance=0.5, guidance_scale=4.0, offset_noise=0.0)
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    out = GUIDANCES["naive"](prior, x0, torch.zeros(2), prompts, 0, cfg, torch.Generator().manual_seed(7),
                             delta_t=200, t=450, return_previews=True)

    # Oracle: the same draws (forced t: only the start noise), every step written out with separate calls.
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    ac = [float(a) for a in prior.alphas_cumprod]

    def eps(x: torch.Tensor, i: int, cond: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return prior.predict_noise(x, torch.full((2,), i), cond.expand(2, *cond.shape[1:]))

    def x0_hat(x: torch.Tensor, e: torch.Tensor, a: float) -> torch.Tensor:
        return (x - math.sqrt(1 - a) * e) / math.sqrt(a)

    x = math.sqrt(ac[0]) * x0.detach() + math.sqrt(1 - ac[0]) * noise
    for a, b in ((0, 200), (200, 400), (400, 450)):
        e = eps(x, a, prompts.inverse)
        x = math.sqrt(ac[b]) * x0_hat(x, e, ac[a]) + math.sqrt(1 - ac[b]) * e
    for a, b in ((450, 400), (400, 200), (200, None)):
        e_neg, e_pos = eps(x, a, prompts.negative), eps(x, a, prompts.base)
        e = e_neg + 4.0 * (e_pos - e_neg)
        if b is None:
            pseudo_gt = x0_hat(x, e, ac[a])
        else:
            x = math.sqrt(ac[b]) * x0_hat(x, e, ac[a]) + math.sqrt(1 - ac[b]) * e
    torch.testing.assert_close(out.previews["pred_x0"], pseudo_gt, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.grad, 0.5 * (x0.detach() - pseudo_gt), rtol=1e-4, atol=1e-5)
    assert out.diagnostics == {**out.diagnostics, "t": 450.0, "s": 250.0, "delta_t": 200.0}

    # Finite, gradient only into x₀ (exactly the injected one), none into the UNet, reproducible.
    assert torch.isfinite(out.grad).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.equal(x0.grad, out.grad)
    assert all(p.grad is None for p in prior.unet.parameters())
    again = GUIDANCES["naive"](prior, x0.detach(), torch.zeros(2), prompts, 0, cfg, torch.Generator().manual_seed(7),
                               delta_t=200, t=450)
    assert torch.equal(again.grad, out.grad)


def test_scheduled_draws_and_forced_t_validation() -> None:
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    x0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    a = GUIDANCES["naive"](prior, x0, torch.zeros(1), prompts, 5000, GuidanceConfig(), torch.Generator().manual_seed(2))
    b = GUIDANCES["naive"](prior, x0, torch.zeros(1), prompts, 5000, GuidanceConfig(), torch.Generator().manual_seed(2))
    assert torch.equal(a.grad, b.grad) and 20 <= a.diagnostics["t"] < 500 and a.diagnostics["delta_t"] == 80
    for method in GUIDANCES:
        with pytest.raises(ValueError, match="forced timestep"):
            GUIDANCES[method](prior, x0, torch.zeros(1), prompts, 0, GuidanceConfig(), torch.Generator(), t=1000)
