"""ISM and SDS: independent step-by-step oracles, closed forms on the multi-view prior, and the contract."""

from __future__ import annotations

import math

import pytest
import torch

from lucid_app.config import GuidanceConfig, ModelConfig, PromptConfig
from lucid_app.guidance import GUIDANCES
from lucid_app.guidance.prompts import encode_prompt_set
from lucid_app.priors.multiview import load_multiview_prior
from tests.helpers import LinearPrior, WARM, ddim_step, linear_eps, linear_prompts, write_object


def _official_noise(shape: torch.Size, offset: float, g: torch.Generator) -> torch.Tensor:
    """The official train_step's noise: randn(shape) + offset·randn(1, C, 1, 1) repeated over the batch."""
    z = torch.randn(shape, generator=g)
    return z + offset * torch.randn(1, shape[1], 1, 1, generator=g).repeat(shape[0], 1, 1, 1) if offset else z


def _reference_ism(prior, x0, prompts, positive, cfg, seed):  # noqa: ANN001, ANN202
    """ISM written out step by step from DESIGN §4, with the same draws (t, then the noise) as the product."""
    g = torch.Generator().manual_seed(seed)
    t = int(torch.randint(20, 500, (1,), generator=g))
    noise = _official_noise(x0.shape, cfg.offset_noise, g)
    ac = [float(a) for a in prior.alphas_cumprod]
    s = max(t - 80, 0)

    def inv_eps(x: torch.Tensor, idx: int) -> torch.Tensor:
        e_inv = linear_eps(prior, x, idx, prompts.inverse)
        if cfg.denoise_guidance_scale <= 1:
            return e_inv
        return e_inv + cfg.denoise_guidance_scale * (linear_eps(prior, x, idx, prompts.negative) - e_inv)

    x = math.sqrt(ac[0]) * x0.detach() + math.sqrt(1 - ac[0]) * noise
    cur = 0
    while cur < s:
        nxt = min(cur + cfg.xs_delta_t, s)
        x = ddim_step(x, inv_eps(x, cur), ac[cur], ac[nxt])
        cur = nxt
    target = inv_eps(x, s)
    x_t = ddim_step(x, target, ac[s], ac[t])
    e_neg = linear_eps(prior, x_t, t, prompts.negative)
    with torch.no_grad():
        e_pos = prior.predict_noise(x_t, torch.full((x0.shape[0],), t), positive)
    pred = e_neg + cfg.guidance_scale * (e_pos - e_neg)
    if cfg.perp_neg:
        d_pos = e_pos - e_neg
        total = d_pos.clone()
        weights = torch.tensor([[0.0, -2.0], [-2.0, -1.0]])  # reference Perp-Neg weights at 0° and 180°
        for k in range(2):
            d = linear_eps(prior, x_t, t, prompts.views[k : k + 1]) - e_neg
            for i in range(x0.shape[0]):
                perp = d[i] - (d[i] * d_pos[i]).sum() / (d_pos[i] * d_pos[i]).sum() * d_pos[i]
                total[i] += weights[i, k] * perp
        pred = e_neg + cfg.guidance_scale * total
    return cfg.lambda_guidance * math.sqrt((1 - ac[t]) / ac[t]) * (pred - target), t, s


@pytest.mark.parametrize(
    "cfg",
    [GuidanceConfig(), GuidanceConfig(denoise_guidance_scale=2.0), GuidanceConfig(perp_neg=True, xs_delta_t=150),
     GuidanceConfig(offset_noise=0.0)],
)
def test_ism_equals_step_by_step_reference(cfg: GuidanceConfig) -> None:
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    azimuth = torch.tensor([0.0, 180.0])
    x0 = torch.randn(2, 4, 6, 10, generator=torch.Generator().manual_seed(7), requires_grad=True)
    out = GUIDANCES["ism"](prior, x0, azimuth, prompts, WARM, cfg, torch.Generator().manual_seed(3))
    calls = list(prior.calls)
    positive = torch.cat([prompts.views[0:1], prompts.views[2:3]])  # front at 0°, back at 180°
    expected, t, s = _reference_ism(prior, x0, prompts, positive, cfg, 3)
    assert out.diagnostics["t"] == t and out.diagnostics["s"] == s and out.diagnostics["delta_t"] == 80
    torch.testing.assert_close(out.grad, expected, rtol=1e-4, atol=1e-6)
    # Batched UNet calls: C per inversion step (2C with CFG), then 2C (4C with Perp-Neg) for the prediction.
    assert calls[-1] == (8 if cfg.perp_neg else 4)
    assert set(calls[:-1]) == {4 if cfg.denoise_guidance_scale > 1 else 2}
    assert len(calls) - 1 == len(range(0, s, cfg.xs_delta_t)) + 1  # inversion steps to s, then s -> t


def test_sds_equals_step_by_step_reference() -> None:
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    cfg = GuidanceConfig(guidance_scale=5.0, lambda_guidance=0.3)
    x0 = torch.randn(3, 4, 5, 7, generator=torch.Generator().manual_seed(1), requires_grad=True)
    azimuth = torch.tensor([90.0, -90.0, 270.0])
    out = GUIDANCES["sds"](prior, x0, azimuth, prompts, WARM, cfg, torch.Generator().manual_seed(4))
    assert prior.calls == [6]  # one batched call: negative and positive branches of 3 views
    g = torch.Generator().manual_seed(4)
    t = int(torch.randint(20, 500, (1,), generator=g))
    noise = _official_noise(x0.shape, cfg.offset_noise, g)
    a = float(prior.alphas_cumprod[t])
    x_t = math.sqrt(a) * x0.detach() + math.sqrt(1 - a) * noise
    e_neg = linear_eps(prior, x_t, t, prompts.negative)
    e_pos = linear_eps(prior, x_t, t, prompts.views[1:2])  # ±90° = side
    expected = 0.3 * math.sqrt((1 - a) / a) * (e_neg + 5.0 * (e_pos - e_neg) - noise)
    torch.testing.assert_close(out.grad, expected, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def one_image_prior(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("one") / "chair"
    write_object(folder, "a red chair", [(0.0, 80.0)], seed=0)
    return load_multiview_prior(folder, ModelConfig(multiview_resolution=8, multiview_kernel="constant",
                                                    multiview_sigma=0.0))


def test_closed_forms_on_one_image_prior(one_image_prior) -> None:  # noqa: ANN001
    """σ = 0: with one image y the posterior mean is y everywhere, so SDS grad = λ·(x₀ − y) and ISM grad = 0 exactly.

    (ISM's gradient is λ·(x̂₀ of the inversion at s − guided x̂₀ at t); both are y here.)
    """
    prior = one_image_prior
    prompts = encode_prompt_set(prior, PromptConfig(text="a red chair"))
    x0 = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = GuidanceConfig(lambda_guidance=0.5)
    az = torch.tensor([0.0, 120.0])
    sds = GUIDANCES["sds"](prior, x0, az, prompts, 0, cfg, torch.Generator().manual_seed(0), return_previews=True)
    torch.testing.assert_close(sds.grad, 0.5 * (x0 - prior.images), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sds.previews["pred_x0"], prior.images.expand(2, -1, -1, -1), rtol=1e-4, atol=1e-4)
    ism = GUIDANCES["ism"](prior, x0, az, prompts, 0, cfg, torch.Generator().manual_seed(0), return_previews=True)
    assert float(ism.grad.abs().max()) < 1e-3 * float(sds.grad.abs().max())
    torch.testing.assert_close(ism.previews["target_x0"], prior.images.expand(2, -1, -1, -1), rtol=1e-4, atol=1e-4)


def test_ism_gradient_is_difference_of_x0_estimates() -> None:
    """grad = λ·w(t)·(ε̂ − target) with x_t one DDIM step from x_s equals λ·(x̂₀(x_s, target) − x̂₀(x_t, ε̂))."""
    prior = LinearPrior()
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    cfg = GuidanceConfig(lambda_guidance=0.2)
    out = GUIDANCES["ism"](
        prior, x0, torch.zeros(2), linear_prompts(prior), 0, cfg, torch.Generator().manual_seed(9), return_previews=True
    )
    expected = 0.2 * (out.previews["target_x0"] - out.previews["pred_x0"])
    torch.testing.assert_close(out.grad, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", sorted(GUIDANCES))
@pytest.mark.parametrize("shape", [(2, 4, 6, 10), (3, 4, 64, 64), (1, 4, 9, 5)])
def test_contract(method: str, shape: tuple[int, ...]) -> None:
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    guidance = GUIDANCES[method]
    rgb = torch.rand(shape[0], shape[2], shape[3], shape[1], generator=torch.Generator().manual_seed(0))
    rgb.requires_grad_(True)
    x0 = prior.encode_images(rgb)
    az = torch.linspace(-170.0, 170.0, shape[0])
    cfg = GuidanceConfig(perp_neg=shape[0] == 3)
    out = guidance(prior, x0, az, prompts, 10, cfg, torch.Generator().manual_seed(5))
    assert torch.isfinite(out.loss) and out.loss.dim() == 0
    assert out.grad.shape == x0.shape and not out.grad.requires_grad
    assert {"t", "s", "delta_t", "grad_norm"} <= set(out.diagnostics)
    assert out.diagnostics["grad_norm"] > 0
    (x0_grad,) = torch.autograd.grad(out.loss, x0, retain_graph=True)
    assert torch.equal(x0_grad, out.grad)  # exactly the injected gradient
    out.loss.backward()
    assert rgb.grad is not None and prior.k.grad is None  # gradient reaches the image, never the prior
    again = guidance(prior, x0.detach(), az, prompts, 10, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(again.grad, out.grad)
    other = guidance(prior, x0.detach(), az, prompts, 10, cfg, torch.Generator().manual_seed(6))
    assert not torch.equal(other.grad, out.grad)


def test_non_finite_gradients_are_zeroed() -> None:
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    x0 = torch.zeros(2, 4, 4, 4)
    x0[0, 0, 0, 0] = float("nan")
    for method, guidance in GUIDANCES.items():
        out = guidance(prior, x0, torch.zeros(2), prompts, 0, GuidanceConfig(), torch.Generator().manual_seed(0))
        assert torch.isfinite(out.grad).all(), method
        assert out.grad[1].abs().sum() > 0, method


def test_live_overrides_of_guidance_scale_and_delta_t() -> None:
    prior = LinearPrior()
    prompts = linear_prompts(prior)
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    base = GUIDANCES["ism"](prior, x0, torch.zeros(2), prompts, WARM, GuidanceConfig(),
                            torch.Generator().manual_seed(1))
    override = GUIDANCES["ism"](
        prior, x0, torch.zeros(2), prompts, WARM, GuidanceConfig(), torch.Generator().manual_seed(1),
        guidance_scale=3.0, delta_t=10,
    )
    assert override.diagnostics["delta_t"] == 10 and override.diagnostics["s"] == override.diagnostics["t"] - 10
    assert not torch.allclose(base.grad, override.grad)


def test_ism_on_a_smoothed_one_image_prior_pulls_straight_to_the_image(one_image_prior) -> None:  # noqa: ANN001
    """σ > 0: every map in the inversion and the prediction is affine with the fixed point y (scalar gains), so
    x̂₀(x_s) − y and x̂₀(x_t) − y are collinear, the estimate at t is nearer y, and grad = λ·(x̂₀(x_s) − x̂₀(x_t))
    points along x₀ − y (up to the small start noise at index 0)."""
    prior = one_image_prior
    smoothed = type(prior)(prior.objects, prior.name, sigma=0.1)
    prompts = encode_prompt_set(smoothed, PromptConfig(text="a red chair", view_dependent=False))
    x0 = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cfg = GuidanceConfig(lambda_guidance=0.5)
    out = GUIDANCES["ism"](smoothed, x0, torch.zeros(1), prompts, 3000, cfg, torch.Generator().manual_seed(0),
                           return_previews=True)
    y = smoothed.images.double()
    at_s = (out.previews["target_x0"].double() - y).flatten()
    at_t = (out.previews["pred_x0"].double() - y).flatten()
    cosine = torch.nn.functional.cosine_similarity
    assert float(cosine(at_s, at_t, dim=0)) > 1 - 1e-9
    assert 0 < at_t.norm() < at_s.norm()
    torch.testing.assert_close(out.grad.double().flatten(), 0.5 * (at_s - at_t), rtol=1e-4, atol=1e-6)
    assert float(cosine(out.grad.double().flatten(), (x0.double() - y).flatten(), dim=0)) > 0.99
