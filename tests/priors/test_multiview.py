"""The analytic multi-view prior (DESIGN §5) on tiny datasets written in code."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from lucid_app.render.cameras import orbit_cameras
from lucid_app.config import ModelConfig, PromptConfig
from lucid_app.guidance.prompts import encode_prompt_set
from lucid_app.priors import load_prior
from lucid_app.priors.base import PriorError
from lucid_app.priors.multiview import MultiViewPrior, load_multiview_prior
from tests.helpers import write_object

SIZE = 8


CAR_VIEWS = [(0.0, 80.0), (90.0, 80.0), (180.0, 80.0), (-90.0, 80.0), (30.0, 10.0)]


@pytest.fixture
def two_objects(tmp_path: Path) -> Path:
    write_object(tmp_path / "chair", "a red chair", [(0.0, 80.0), (120.0, 80.0)], seed=0, test_views=[(60.0, 80.0)])
    write_object(tmp_path / "car", "a blue car", CAR_VIEWS, seed=1)
    return tmp_path


@pytest.fixture
def prior(two_objects: Path) -> MultiViewPrior:
    """σ = 0: DESIGN §5's denoiser of the images themselves."""
    return load_multiview_prior(two_objects, ModelConfig(multiview_resolution=SIZE, multiview_kernel="constant",
                                                         multiview_sigma=0.0))


def test_loading_layout_cameras_and_schedule(prior: MultiViewPrior, two_objects: Path) -> None:
    from diffusers import DDPMScheduler

    assert prior.captions == ["a blue car", "a red chair"]  # sorted folder order
    assert prior.images.shape == (7, 3, SIZE, SIZE)
    assert prior.images.min() >= -1 and prior.images.max() <= 1
    azimuth = prior.azimuth_deg[:4].clone()
    azimuth[2] = azimuth[2].abs()  # ±180
    torch.testing.assert_close(azimuth, torch.tensor([0.0, 90.0, 180.0, -90.0]), atol=1e-3, rtol=0)
    assert prior.polar_deg[4] == pytest.approx(10.0, abs=1e-3)
    chair = prior.objects[1]
    assert chair.test_images is not None and chair.test_images.shape == (1, SIZE, SIZE, 3)
    assert chair.test_cameras is not None and float(chair.test_cameras.azimuth_deg[0]) == pytest.approx(60.0, abs=1e-3)
    assert prior.objects[0].test_images is None
    expected = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod
    torch.testing.assert_close(prior.alphas_cumprod, expected)
    assert load_prior(f"multiview:{two_objects}", ModelConfig(multiview_resolution=SIZE)).num_images == 7


def test_rgba_is_composited_and_images_resized(tmp_path: Path) -> None:
    folder = tmp_path / "obj"
    write_object(folder, None, [(0.0, 80.0)], seed=0, size=16)
    image = np.zeros((16, 16, 4), dtype=np.uint8)
    image[:8, :, :] = (255, 0, 0, 255)  # top half opaque red, bottom transparent
    iio.imwrite(folder / "train" / "r_0.png", image)
    white = load_multiview_prior(folder, ModelConfig(multiview_resolution=4))
    assert white.captions == ["obj"]
    rgb = white.decode(white.images)[0]
    torch.testing.assert_close(rgb[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(rgb[3, 0], torch.tensor([1.0, 1.0, 1.0]))
    black = load_multiview_prior(folder, ModelConfig(multiview_resolution=4), background=(0.0, 0.0, 0.0))
    torch.testing.assert_close(black.decode(black.images)[0][3, 0], torch.zeros(3))
    renders = torch.rand(2, 12, 20, 3, requires_grad=True)
    x0 = white.encode_images(renders)
    assert x0.shape == (2, 3, 4, 4)
    x0.sum().backward()
    assert renders.grad is not None and renders.grad.abs().sum() > 0


def _brute_force_mean(prior: MultiViewPrior, x_t: torch.Tensor, t: int, weights: torch.Tensor) -> torch.Tensor:
    alpha = prior.alphas_cumprod[t].double()
    ys = prior.images.double()
    logits = []
    for k in range(ys.shape[0]):
        sq = ((x_t.double() - alpha.sqrt() * ys[k]) ** 2).sum()
        logits.append(torch.log(weights[k].double()) - sq / (2 * (1 - alpha)))
    p = torch.softmax(torch.stack(logits), dim=0)
    return (p[:, None, None, None] * ys).sum(dim=0)


@pytest.mark.parametrize("t", [900, 500, 150])
def test_denoiser_equals_brute_force_posterior_mean(prior: MultiViewPrior, t: int) -> None:
    g = torch.Generator().manual_seed(t)
    weights = torch.rand(prior.num_images, generator=g) + 0.1
    weights = weights / weights.sum()
    alpha = prior.alphas_cumprod[t]
    x_t = alpha.sqrt() * prior.images[2:3] + (1 - alpha).sqrt() * 1.5 * torch.randn(1, 3, SIZE, SIZE, generator=g)
    mean = _brute_force_mean(prior, x_t[0], t, weights)
    eps = prior.predict_noise(x_t, torch.tensor([t]), weights[None])
    expected_eps = (x_t[0].double() - alpha.double().sqrt() * mean) / (1 - alpha.double()).sqrt()
    torch.testing.assert_close(eps[0].double(), expected_eps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(prior.posterior_mean(x_t, torch.tensor([t]), weights[None])[0].double(), mean)


@pytest.mark.parametrize("t", [700, 300, 20])
def test_smoothed_denoiser_equals_tweedie_on_the_mixture_density(two_objects: Path, t: int) -> None:
    """σ > 0: E[x₀|x_t] = (x_t + (1−ᾱ)∇log p_t(x_t))/√ᾱ, with ∇log p_t by autograd of the mixture's density."""
    sigma = 0.2
    prior = load_multiview_prior(two_objects, ModelConfig(multiview_resolution=SIZE, multiview_kernel="constant",
                                                          multiview_sigma=sigma))
    g = torch.Generator().manual_seed(t)
    weights = torch.rand(prior.num_images, generator=g, dtype=torch.float64) + 0.1
    weights = weights / weights.sum()
    alpha = prior.alphas_cumprod[t].double()
    x_t = (alpha.sqrt() * prior.images[1:2].double() + (1 - alpha).sqrt() * torch.randn(1, 3, SIZE, SIZE, generator=g,
           dtype=torch.float64)).requires_grad_(True)
    variance = alpha * sigma**2 + 1 - alpha
    sq = ((x_t - alpha.sqrt() * prior.images.double()) ** 2).flatten(1).sum(1)
    log_density = torch.logsumexp(torch.log(weights) - sq / (2 * variance), dim=0)
    (score,) = torch.autograd.grad(log_density, x_t)
    tweedie = (x_t.detach() + (1 - alpha) * score) / alpha.sqrt()
    mean = prior.posterior_mean(x_t.detach(), torch.tensor([t]), weights[None])
    torch.testing.assert_close(mean, tweedie, rtol=1e-8, atol=1e-8)


def test_smoothed_denoiser_keeps_the_input_at_small_noise(two_objects: Path) -> None:
    prior = load_multiview_prior(two_objects, ModelConfig(multiview_resolution=SIZE, multiview_kernel="constant",
                                                          multiview_sigma=0.3))
    x0 = prior.images + 0.05 * torch.randn(prior.images.shape, generator=torch.Generator().manual_seed(0))
    t = torch.zeros(prior.num_images, dtype=torch.long)
    alpha = prior.alphas_cumprod[0]
    uniform = prior.encode_prompts([""]).expand(prior.num_images, -1)
    mean = prior.posterior_mean(alpha.sqrt() * x0, t, uniform)
    assert (mean - x0).abs().max() < 0.01 < (x0 - prior.images).abs().max()


@pytest.mark.parametrize(("t", "beta"), [(700, 2.0), (300, 2.0), (20, 2.0), (400, 6.0)])
def test_snr_kernel_is_tweedie_of_the_mixture_with_that_steps_width(two_objects: Path, t: int, beta: float) -> None:
    """The "snr" kernel at t is the exact denoiser of the mixture with σ_t² = (SNR_t/SNR_c)^β / SNR_t."""
    from diffusers import DDPMScheduler

    keep_t = 450
    prior = load_multiview_prior(two_objects, ModelConfig(multiview_resolution=SIZE, multiview_keep_t=keep_t,
                                                          multiview_keep_sharpness=beta))
    abar = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod.double()
    snr = abar / (1 - abar)
    sigma2 = (snr[t] / snr[keep_t]) ** beta / snr[t]
    g = torch.Generator().manual_seed(t)
    weights = torch.rand(prior.num_images, generator=g, dtype=torch.float64) + 0.1
    weights = weights / weights.sum()
    alpha = abar[t]
    x_t = (alpha.sqrt() * prior.images[3:4].double() + (1 - alpha).sqrt() * torch.randn(1, 3, SIZE, SIZE, generator=g,
           dtype=torch.float64)).requires_grad_(True)
    sq = ((x_t - alpha.sqrt() * prior.images.double()) ** 2).flatten(1).sum(1)
    log_density = torch.logsumexp(torch.log(weights) - sq / (2 * (alpha * sigma2 + 1 - alpha)), dim=0)
    (score,) = torch.autograd.grad(log_density, x_t)
    tweedie = (x_t.detach() + (1 - alpha) * score) / alpha.sqrt()
    torch.testing.assert_close(prior.posterior_mean(x_t.detach(), torch.tensor([t]), weights[None]), tweedie,
                               rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("beta", [2.0, 6.0])
def test_snr_kernel_keeps_half_a_clean_input_at_keep_t(two_objects: Path, beta: float) -> None:
    """One image selected: E[x₀ | √ᾱ_t (y + d)] = y + k_t·d, k = ½ at t_c, ≈ 1 at t = 0, ≈ 0 at t = 900."""
    prior = load_multiview_prior(two_objects, ModelConfig(multiview_resolution=SIZE, multiview_keep_t=300,
                                                          multiview_keep_sharpness=beta))
    one_hot = torch.zeros(1, prior.num_images)
    one_hot[0, 2] = 1.0
    y = prior.images[2:3]
    d = 0.2 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    kept = {}
    for t in (0, 300, 900):
        alpha = prior.alphas_cumprod[t]
        mean = prior.posterior_mean(alpha.sqrt() * (y + d), torch.tensor([t]), one_hot)
        kept[t] = float(((mean - y) * d).sum() / (d * d).sum())
        torch.testing.assert_close(mean - y, kept[t] * d, rtol=1e-4, atol=1e-5)
    assert kept[0] > 0.999 and abs(kept[300] - 0.5) < 1e-4 and kept[900] < 1e-3


def test_small_t_returns_nearest_image(prior: MultiViewPrior) -> None:
    g = torch.Generator().manual_seed(0)
    x0 = prior.images + 0.3 * torch.randn(prior.images.shape, generator=g)
    t = torch.full((prior.num_images,), 5)
    alpha = prior.alphas_cumprod[5]
    x_t = alpha.sqrt() * x0 + (1 - alpha).sqrt() * torch.randn(x0.shape, generator=g)
    uniform = prior.encode_prompts([""]).expand(prior.num_images, -1)
    torch.testing.assert_close(prior.posterior_mean(x_t, t, uniform), prior.images)


def test_caption_and_view_selection(prior: MultiViewPrior) -> None:
    cond = prior.encode_prompts(
        ["a red chair", "RED CHAIR", "", "a blue car, front view", "a blue car, side view",
         "a blue car, back view", "a blue car, overhead view", "a photo of a blue car, Front View"]
    )
    def selected(row: torch.Tensor) -> list[int]:
        return torch.nonzero(row > 0).flatten().tolist()

    assert selected(cond[0]) == [5, 6]
    assert selected(cond[1]) == [5, 6]
    assert selected(cond[2]) == list(range(7))
    assert selected(cond[3]) == [0]
    assert selected(cond[4]) == [1, 3]
    assert selected(cond[5]) == [2]
    assert selected(cond[6]) == [4]
    assert selected(cond[7]) == [0]  # the prompt contains the caption
    torch.testing.assert_close(cond.sum(dim=1), torch.ones(8))
    # A sector the object has no image in keeps all its views.
    assert selected(prior.encode_prompts(["a red chair, overhead view"])[0]) == [5, 6]


def test_unmatched_positive_raises_listing_captions_and_negative_is_unconditional(prior: MultiViewPrior) -> None:
    with pytest.raises(PriorError, match="a blue car.*a red chair"):
        prior.encode_prompts(["a green dragon"])
    prompts = encode_prompt_set(prior, PromptConfig(text="a red chair"))  # default paper negative: no match
    torch.testing.assert_close(prompts.negative, prior.encode_prompts([""]))
    torch.testing.assert_close(prompts.positive(torch.tensor([0.0]))[0, 5:], torch.tensor([1.0, 0.0]))


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PriorError, match="does not exist"):
        load_prior(f"multiview:{tmp_path / 'nope'}", ModelConfig())
    with pytest.raises(PriorError, match="transforms_train.json"):
        load_prior(f"multiview:{tmp_path}", ModelConfig())


def test_camera_conditioning_weights_images_by_view_angle(two_objects: Path) -> None:
    """Weights ∝ cond·exp(−θ²/2τ²) with θ the angle between viewing directions (closed form on the CAR_VIEWS)."""
    tau = 30.0
    prior = load_multiview_prior(two_objects, ModelConfig(multiview_resolution=SIZE, multiview_camera_sigma_deg=tau))
    assert prior.conditions_on_camera
    cam = orbit_cameras(torch.tensor([45.0]), torch.tensor([80.0]), torch.tensor([4.0]), torch.tensor([0.6]),
                        SIZE, SIZE)
    directions = prior.camera_control(cam)
    car = prior.encode_prompts(["a blue car"])
    weights = prior.condition_on_cameras(car, directions)[0].double()
    # Angles from (45°, 80°) to the car's views (0, 80), (90, 80), (180, 80), (-90, 80), (30, 10), by the
    # spherical law of cosines.
    def angle(az1: float, p1: float, az2: float, p2: float) -> float:
        r = math.radians
        c = math.cos(r(p1)) * math.cos(r(p2)) + math.sin(r(p1)) * math.sin(r(p2)) * math.cos(r(az1 - az2))
        return math.degrees(math.acos(max(-1.0, min(1.0, c))))
    theta = torch.tensor([angle(45.0, 80.0, az, p) for az, p in CAR_VIEWS], dtype=torch.float64)
    expected = torch.exp(-0.5 * (theta / tau) ** 2)
    torch.testing.assert_close(weights[:5], expected / expected.sum(), rtol=1e-5, atol=1e-7)
    assert float(weights[5:].abs().sum()) == 0.0  # the chair stays excluded
    # Far from every view the row does not vanish: it keeps the nearest view.
    far = prior.condition_on_cameras(car, -prior.view_dirs[2:3])
    assert torch.isfinite(far).all() and abs(float(far.sum()) - 1.0) < 1e-6


def test_camera_conditioned_prior_feeds_the_trainer_and_changes_the_prediction(two_objects: Path) -> None:
    from lucid_app.priors.base import camera_control_fn

    plain = load_multiview_prior(two_objects, ModelConfig(multiview_resolution=SIZE))
    conditioned = load_multiview_prior(two_objects, ModelConfig(multiview_resolution=SIZE,
                                                                multiview_camera_sigma_deg=10.0))
    assert camera_control_fn(plain) is None
    control_fn = camera_control_fn(conditioned)
    assert control_fn is not None
    cam = orbit_cameras(torch.tensor([0.0]), torch.tensor([80.0]), torch.tensor([4.0]), torch.tensor([0.6]), SIZE, SIZE)
    control = control_fn(cam)
    torch.testing.assert_close(control, conditioned.view_dirs[0:1], atol=1e-5, rtol=0)
    car = conditioned.encode_prompts(["a blue car"])
    t = torch.tensor([800])
    x_t = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    # At large t the posterior follows the prior weights: conditioned on the front camera it is the front image's.
    one_hot = torch.zeros_like(car)
    one_hot[0, 0] = 1.0
    torch.testing.assert_close(conditioned.predict_noise(x_t, t, car, control),
                               conditioned.predict_noise(x_t, t, one_hot), rtol=1e-3, atol=1e-3)
    assert not torch.allclose(conditioned.predict_noise(x_t, t, car, control), plain.predict_noise(x_t, t, car))
