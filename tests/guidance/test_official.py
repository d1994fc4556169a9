"""The official LucidDreamer guidance behaviours and the real-model fixes of issue 16, against closed forms: fp16
loss sums, offset noise, the inversion without ControlNet. (v-prediction: priors/test_prediction.py; the TV loss and
the batch flip: train/test_losses.py; the full-size architecture and ``bench step``: bench/test_step.py.)"""

from __future__ import annotations

import math

import pytest
import torch

from lucid_app.config import GuidanceConfig, PromptConfig
from lucid_app.guidance import GUIDANCES
from lucid_app.guidance.ddim import offset_noise_like
from lucid_app.guidance.base import gradient_loss
from lucid_app.guidance.ism import ism_guidance
from lucid_app.guidance.prompts import encode_prompt_set
from lucid_app.priors.stable_diffusion import StableDiffusionPrior
from tests.helpers import LinearPrior, WARM
from tests.tiny_sd import tiny_pipeline


# ---------------------------------------------------------------- v-prediction


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


# ---------------------------------------------------------------- full-size architecture and bench step


# ---------------------------------------------------------------- ETA


