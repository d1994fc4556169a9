"""DDIM maths and the ISM schedules (DESIGN §4 steps 1-3) against diffusers and hand-computed values."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import torch

from lucid_app.config import GuidanceConfig
from lucid_app.guidance.ddim import (
    add_noise,
    ddim_jump,
    delta_t_at,
    inversion_schedule,
    predict_x0,
    snr_weight,
    t_bounds_at,
)

if TYPE_CHECKING:  # annotations only: their modules load in the tests that use them
    from diffusers import DDIMScheduler

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False}


def _scheduler(steps: int) -> DDIMScheduler:
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, set_alpha_to_one=False, **SD)
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize("steps", [1000, 50])
def test_jump_matches_diffusers_step(steps: int) -> None:
    scheduler = _scheduler(steps)
    ac = scheduler.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    stride = 1000 // steps
    for t in (999 - (999 % stride), 500, stride * 3, stride):
        x = torch.randn(2, 4, 8, 8, generator=g)
        eps = torch.randn(2, 4, 8, 8, generator=g)
        expected = scheduler.step(eps, t, x, eta=0.0).prev_sample
        ours = ddim_jump(x, eps, ac[t], ac[t - stride])
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_jump_with_eta_matches_diffusers_step() -> None:
    scheduler = _scheduler(50)
    ac = scheduler.alphas_cumprod
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = scheduler.step(eps, 500, x, eta=0.7, generator=torch.Generator().manual_seed(3)).prev_sample
    ours = ddim_jump(x, eps, ac[500], ac[480], eta=0.7, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Generator"):
        ddim_jump(x, eps, ac[500], ac[480], eta=0.7)


def test_jump_inverts_itself_for_a_fixed_eps() -> None:
    ac = _scheduler(1000).alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    x_a = torch.randn(3, 4, 5, 7, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, 5, 7, generator=g, dtype=torch.float64)
    for a, b in [(0, 200), (20, 977), (750, 10)]:
        x_b = ddim_jump(x_a, eps, ac[a], ac[b])
        assert not torch.allclose(x_b, x_a)
        torch.testing.assert_close(ddim_jump(x_b, eps, ac[b], ac[a]), x_a)
        # The x̂₀ estimate is invariant along a jump with the same ε.
        torch.testing.assert_close(predict_x0(x_b, eps, ac[b]), predict_x0(x_a, eps, ac[a]))


def test_add_noise_matches_diffusers_and_per_sample_alphas() -> None:
    scheduler = _scheduler(1000)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    t = torch.tensor([10, 700])
    expected = scheduler.add_noise(x0, noise, t)
    torch.testing.assert_close(add_noise(x0, noise, scheduler.alphas_cumprod[t]), expected)
    torch.testing.assert_close(predict_x0(expected, noise, scheduler.alphas_cumprod[t]), x0, rtol=1e-4, atol=1e-4)


def test_snr_weight() -> None:
    assert float(snr_weight(0.25)) == pytest.approx(3.0**0.5)
    assert float(snr_weight(0.5)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("s", "delta", "steps", "expected"),
    [
        (450, 200, 5, [0, 200, 400, 450]),
        (0, 200, 5, [0]),
        (200, 200, 5, [0, 200]),
        (977, 200, 5, [0, 200, 400, 600, 800, 977]),
        (1200, 200, 5, [200, 400, 600, 800, 1000, 1200]),
        (700, 200, 2, [300, 500, 700]),
        (35, 10, 5, [0, 10, 20, 30, 35]),
    ],
)
def test_inversion_schedule(s: int, delta: int, steps: int, expected: list[int]) -> None:
    schedule = inversion_schedule(s, delta, steps)
    assert schedule == expected
    assert len(schedule) - 1 <= steps


def test_inversion_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        inversion_schedule(-1, 200, 5)
    with pytest.raises(ValueError):
        inversion_schedule(10, 0, 5)


def test_delta_t_and_t_range_schedules() -> None:
    cfg = GuidanceConfig()  # delta_t 80, start 100, warm-up 1500, t_range (0.02, 0.5), max_t 0.98
    assert [delta_t_at(k, cfg) for k in (0, 750, 1499, 1500, 5000)] == [100, 90, 81, 80, 80]
    assert delta_t_at(0, GuidanceConfig(annealing_intervals=False)) == 80
    assert t_bounds_at(0, cfg, 1000) == (20, 980)
    assert t_bounds_at(750, cfg, 1000) == (20, 740)
    assert t_bounds_at(1500, cfg, 1000) == (20, 500)
    assert t_bounds_at(9999, cfg, 1000) == (20, 500)
    assert t_bounds_at(0, GuidanceConfig(warmup_steps=0), 1000) == (20, 500)
