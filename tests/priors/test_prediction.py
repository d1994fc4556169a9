"""A model's output as ε̂ (``lucid_app.priors.prediction``): ε-, v- and x₀-prediction recover ε exactly, and a
v-prediction prior's x̂₀ matches diffusers' DDIM."""

from __future__ import annotations


import pytest
import torch
from diffusers import DDIMScheduler

from lucid_app.priors.prediction import noise_from_model_output
from lucid_app.guidance.ddim import predict_x0
from lucid_app.priors.stable_diffusion import StableDiffusionPrior
from tests.tiny_sd import tiny_pipeline


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
