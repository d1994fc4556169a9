"""The official LucidDreamer behaviours and the real-model fixes of issue 16, against closed forms:
v-prediction, fp16 loss sums, offset noise, the inversion without ControlNet, the batch flip, the official TV
loss, the full-size architecture, ``bench step`` and the ETA notice."""

from __future__ import annotations

import math
import os

import pytest
import torch

from lucid_app.bench.step import STAGES, bench_step
from lucid_app.config import GuidanceConfig, PromptConfig
from lucid_app.train.eta import eta_notice
from lucid_app.guidance import GUIDANCES
from lucid_app.priors.prediction import noise_from_model_output
from lucid_app.guidance.ddim import offset_noise_like, predict_x0
from lucid_app.guidance.base import gradient_loss
from lucid_app.guidance.ism import ism_guidance
from lucid_app.guidance.prompts import encode_prompt_set
from lucid_app.train.losses import flip_views, minmax_disparity, total_variation
from test_guidance import WARM, LinearPrior

# The full-size step (SD 2.1 base at 512², 4 views) takes minutes on a CPU: run only with LUCID_FULL_SIZE=1.
FULL_SIZE = os.environ.get("LUCID_FULL_SIZE") == "1"


# ---------------------------------------------------------------- v-prediction


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_noise_from_model_output_recovers_eps_exactly(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, 5, 5, generator=g,
                                                                                   dtype=torch.float64)
    alpha = torch.tensor([0.9, 0.5, 0.05], dtype=torch.float64)
    a = alpha.reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    output = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}[kind]
    torch.testing.assert_close(noise_from_model_output(output, x_t, alpha, kind), eps)
    with pytest.raises(ValueError, match="v_prediction"):
        noise_from_model_output(output, x_t, alpha, "flow")  # type: ignore[arg-type]


def test_v_prediction_prior_matches_diffusers_ddim_x0() -> None:
    """A tiny v-prediction UNet: the prior's ε̂ gives the x̂₀ that diffusers' DDIMScheduler.step computes."""
    from diffusers import DDIMScheduler
    from lucid_app.priors.stable_diffusion import StableDiffusionPrior
    from tiny_sd import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    prior = StableDiffusionPrior("tiny-v", pipe, torch.device("cpu"))
    assert prior.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    cond = prior.encode_prompts(["a cat", ""])
    t = 600
    eps = prior.predict_noise(x_t, torch.full((2,), t), cond)
    with torch.no_grad():
        v = pipe.unet(x_t, torch.full((2,), t), encoder_hidden_states=cond).sample
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(1000)
    expected_x0 = scheduler.step(v, t, x_t).pred_original_sample
    torch.testing.assert_close(predict_x0(x_t, eps, prior.alphas_cumprod[t]), expected_x0, rtol=1e-4, atol=1e-4)
    # ε-prediction models are untouched: the output is the UNet's.
    plain = StableDiffusionPrior("tiny", tiny_pipeline(), torch.device("cpu"))
    with torch.no_grad():
        raw = plain.unet(x_t, torch.full((2,), t), encoder_hidden_states=cond).sample
    torch.testing.assert_close(plain.predict_noise(x_t, torch.full((2,), t), cond), raw)


# ---------------------------------------------------------------- fp16


def test_gradient_loss_sums_in_fp32_and_keeps_the_exact_gradient() -> None:
    x0 = torch.full((4, 4, 64, 64), 60.0, dtype=torch.float16, requires_grad=True)
    grad = torch.full((4, 4, 64, 64), 2.0, dtype=torch.float16)
    assert not torch.isfinite((grad * x0.detach()).sum())  # the old fp16 sum: 7.9e6 > 65504
    loss = gradient_loss(x0, grad)
    assert loss.dtype == torch.float32 and float(loss.detach()) == 60.0 * 2.0 * x0.numel()
    loss.backward()
    assert x0.grad.dtype == torch.float16 and torch.equal(x0.grad, grad)


def test_ism_on_a_tiny_fp16_model_has_a_finite_loss() -> None:
    from lucid_app.priors.stable_diffusion import StableDiffusionPrior
    from tiny_sd import tiny_pipeline

    pipe = tiny_pipeline().to(torch.float16)
    prior = StableDiffusionPrior("tiny-fp16", pipe, torch.device("cpu"))
    prompts = encode_prompt_set(prior, PromptConfig(text="a cat", negative="blurry"))
    rgb = torch.rand(4, 32, 32, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    try:
        x0 = prior.encode_images(rgb)
    except RuntimeError as err:  # an op without a CPU fp16 kernel in this torch build
        pytest.skip(f"fp16 on the CPU: {err}")
    assert x0.dtype == torch.float16
    # Large latents (a constant shift: d x0 / d rgb unchanged), so the fp16 sum of ⟨grad, x0⟩ overflows.
    x0 = x0 + 8.0 * x0.detach().sign()
    cfg = GuidanceConfig(lambda_guidance=1000.0)
    out = ism_guidance(prior, x0, torch.zeros(4), prompts, 0, cfg, torch.Generator().manual_seed(0), t=900)
    assert torch.isfinite(out.grad).all() and torch.isfinite(out.loss)
    assert not torch.isfinite((out.grad.to(x0.dtype) * x0.detach()).sum())  # what the fp16 sum gave
    exact = (out.grad.double() * x0.detach().double()).sum()
    assert math.isclose(float(out.loss.detach()), float(exact), rel_tol=1e-4)
    out.loss.backward()
    assert torch.isfinite(rgb.grad).all()


# ---------------------------------------------------------------- official augmentations


def test_offset_noise_is_randn_plus_a_per_channel_shift() -> None:
    x = torch.zeros(3, 4, 5, 6)
    noise = offset_noise_like(x, 0.1, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, 4, 5, 6, generator=g)
    o = torch.randn(1, 4, 1, 1, generator=g)
    torch.testing.assert_close(noise, z + 0.1 * o.repeat(3, 1, 1, 1))
    plain = offset_noise_like(x, 0.0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(plain, torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(5)))


class ControlRecorder(LinearPrior):
    def __init__(self) -> None:
        super().__init__()
        self.controls: list[torch.Tensor | None] = []

    def predict_noise(self, x_t, t, cond, control=None):  # noqa: ANN001, ANN201 - protocol signature
        self.controls.append(control)
        return super().predict_noise(x_t, t, cond)


@pytest.mark.parametrize("method", ["ism", "naive"])
def test_inversion_runs_without_controlnet_images_unless_asked(method: str) -> None:
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 16, 16, 3)
    for keep in (False, True):
        prior = ControlRecorder()
        prompts = encode_prompt_set(prior, PromptConfig(text="a cat", negative="blurry"))
        cfg = GuidanceConfig(inversion_control=keep)
        GUIDANCES[method](prior, x0, torch.zeros(2), prompts, WARM, cfg, torch.Generator().manual_seed(1),
                          control=images, t=400)
        # Inversion calls hold C = 2 samples, guided predictions 2C (negative and positive branches).
        inversion = [c for c, b in zip(prior.controls, prior.calls) if b == 2]
        guided = [c for c, b in zip(prior.controls, prior.calls) if b == 4]
        assert inversion and guided and all(c is not None for c in guided)
        assert all((c is not None) == keep for c in inversion)
    # A camera-conditioned prior's directions [C, 3] are its own conditioning: the inversion keeps them.
    prior = ControlRecorder()
    prompts = encode_prompt_set(prior, PromptConfig(text="a cat", negative="blurry"))
    GUIDANCES["ism"](prior, x0, torch.zeros(2), prompts, WARM, GuidanceConfig(), torch.Generator().manual_seed(1),
                     control=torch.rand(2, 3), t=400)
    assert all(c is not None for c in prior.controls)


def test_flip_views_flips_the_whole_batch_with_its_control() -> None:
    images = torch.arange(2 * 3 * 4 * 3, dtype=torch.float32).reshape(2, 3, 4, 3)
    control = torch.rand(2, 3, 4, 3)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    same, same_control, flipped = flip_views(images, 0.0, g, control)
    assert same is images and same_control is control and not flipped
    assert torch.equal(g.get_state(), state)  # ratio 0 draws nothing
    out, out_control, flipped = flip_views(images, 1.0, g, control)
    assert flipped and torch.equal(out, images.flip(2)) and torch.equal(out_control, control.flip(2))
    directions = torch.rand(2, 3)
    assert flip_views(images, 1.0, g, directions)[1] is directions
    coins = [flip_views(images, 0.5, g)[2] for _ in range(400)]
    assert 0.4 < sum(coins) / len(coins) < 0.6


def test_total_variation_l2_equals_the_official_formula() -> None:
    x = torch.rand(3, 7, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # Official tv_loss on [B, K, H, W]: 2·(Σdy²/(K(H−1)W) + Σdx²/(KH(W−1)))/B.
    y = x.permute(0, 3, 1, 2)
    B, K, H, W = y.shape
    h_tv = (y[:, :, 1:, :] - y[:, :, :-1, :]).pow(2).sum()
    w_tv = (y[:, :, :, 1:] - y[:, :, :, :-1]).pow(2).sum()
    official = 2 * (h_tv / (K * (H - 1) * W) + w_tv / (K * H * (W - 1))) / B
    torch.testing.assert_close(total_variation(x, "l2"), official)
    l1 = (x[:, :, 1:] - x[:, :, :-1]).abs().mean() + (x[:, 1:] - x[:, :-1]).abs().mean()
    torch.testing.assert_close(total_variation(x, "l1"), l1)


def test_minmax_disparity_spans_zero_to_one_per_view() -> None:
    depth = torch.tensor([[1.0, 2.0], [4.0, 0.0]]).reshape(1, 2, 2, 1).repeat(2, 1, 1, 1) * torch.tensor(
        [1.0, 3.0]).reshape(2, 1, 1, 1)
    alpha = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).reshape(1, 2, 2, 1).repeat(2, 1, 1, 1)
    d = minmax_disparity(depth, alpha)
    for view in d:
        assert float(view.min()) == 0.0 and math.isclose(float(view.max()), 1.0)
    # Nearest surface is 1, the background 0, in between 1/z scaled: (1/2 − 0)/(1 − 0) = 0.5.
    assert math.isclose(float(d[0, 0, 1, 0]), 0.5) and math.isclose(float(d[1, 1, 0, 0]), 0.25)


# ---------------------------------------------------------------- full-size architecture and bench step


def test_full_size_architecture_has_sd21_base_parameter_counts() -> None:
    """Built on the meta device (no memory, no time): the counts of stabilityai/stable-diffusion-2-1-base."""
    from lucid_app.priors.sd_architecture import _text_encoder, _unet, _vae, clip_sized_tokenizer

    tokenizer = clip_sized_tokenizer()
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    with torch.device("meta"):
        text = _text_encoder(tokenizer, "sd21-base")
        unet = _unet("sd21-base", 64, 1024)
        vae = _vae("sd21-base", 512)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == 865_910_724 and count(vae) == 83_653_863 and count(text) == 340_387_840


def test_bench_step_reports_every_stage_on_the_mini_arch() -> None:
    from lucid_app.priors.sd_architecture import build_pipeline

    report = bench_step(arch="mini", views=1, size_px=32, device="cpu", steps=1, gaussians=300)
    assert report["losses_finite"] and report["dtype"] == "float32" and report["device"] == "cpu"
    stages = report["stage_s"]
    assert set(stages) == set(STAGES) and all(v >= 0 for v in stages.values())
    assert math.isclose(sum(stages.values()), report["s_per_step"], rel_tol=0.05, abs_tol=0.01)
    # ISM: one call per inversion step plus s → t (1 sample each), then the guided call of 2 samples.
    calls, evaluations = report["unet_calls_per_step"][0], report["unet_evaluations_per_step"][0]
    assert evaluations == (calls - 1) + 2
    assert report["peak_rss_gb"] > 0
    with pytest.raises(ValueError, match="multiple of 8"):
        build_pipeline("mini", 30, torch.float32)


@pytest.mark.slow
@pytest.mark.skipif(not FULL_SIZE, reason="full-size SD 2.1 step: ~7 min and ~9 GB on a 2-core CPU; LUCID_FULL_SIZE=1")
def test_full_size_step_on_the_cpu_fits_the_memory_target() -> None:
    report = bench_step(arch="sd21-base", views=4, size_px=512, device="cpu", steps=1)
    assert report["losses_finite"] and report["peak_rss_gb"] <= 12.0


# ---------------------------------------------------------------- ETA


def test_eta_notice_only_for_runs_of_hours() -> None:
    assert eta_notice(0.5, 5000) is None and eta_notice(10.0, 0) is None
    notice = eta_notice(300.0, 4999)
    assert notice is not None and "17 days" in notice and "--preset demo" in notice and "GPU" in notice
    assert "4.2 h" in eta_notice(3.0, 5000)
