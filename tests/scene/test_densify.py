"""Densification: exact event steps, clone vs split, pruning, opacity reset, optimiser alignment, statistics."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lucid_app.config import DensifyConfig, OptimConfig
from lucid_app.scene.densify import (
    Densifier,
    densify_masks,
    event_steps,
    is_densify_step,
    is_reset_step,
    limit_to_budget,
    prune_mask,
    split_samples,
    view_grad_norms,
)
from lucid_app.scene.gaussians import PARAM_NAMES, GaussianModel, inverse_sigmoid
from lucid_app.render.base import RenderOutput
from lucid_app.render.projection import quat_to_rotmat

W, H = 64, 48


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model_with(scales: list[float], opacity: float = 0.5, seed: int = 0) -> GaussianModel:
    """Gaussians on a line (well separated), isotropic scales as given."""
    n = len(scales)
    m = GaussianModel.from_points(torch.stack([torch.arange(n) * 1.0, torch.zeros(n), torch.zeros(n)], -1),
                                  OptimConfig(), opacity=opacity)
    with torch.no_grad():
        m.params["log_scales"].copy_(torch.log(torch.tensor(scales))[:, None].expand(n, 3))
        m.params["quats"].copy_(torch.nn.functional.normalize(torch.randn(n, 4, generator=gen(seed)), dim=-1))
    return m


def fake_render(m: GaussianModel, ndc_grads: torch.Tensor, radii: torch.Tensor) -> RenderOutput:
    """A RenderOutput whose means2d [C, N, 2] gets the gradient ``ndc_grads`` (NDC units) after backward."""
    c = ndc_grads.shape[0]
    means2d = (m.means[None, :, :2] * 10.0).expand(c, -1, -1)
    means2d.retain_grad()
    px_grads = ndc_grads / torch.tensor([W / 2.0, H / 2.0])
    (means2d * px_grads).sum().backward()
    out = RenderOutput(
        rgb=torch.zeros(c, H, W, 3), alpha=torch.zeros(c, H, W, 1), depth=torch.zeros(c, H, W, 1),
        means2d=means2d, radii=radii, width=W, height=H,
    )
    return out


def assert_optimizer_aligned(m: GaussianModel) -> None:
    for group, name in zip(m.optimizer.param_groups, PARAM_NAMES):
        assert group["name"] == name and group["params"][0] is m.params[name]
        state = m.optimizer.state.get(m.params[name], {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                assert state[key].shape == m.params[name].shape, (name, key)


def adam_step(m: GaussianModel, seed: int) -> None:
    g = gen(seed)
    s = m.splats()
    loss = sum(
        (t * torch.randn(t.shape, generator=g)).sum() for t in (s.means, s.scales, s.quats, s.opacities, s.sh)
    )
    m.optimizer.zero_grad()
    loss.backward()
    m.optimizer.step()


# ---------------------------------------------------------------- schedule


def test_reference_event_steps() -> None:
    ev = event_steps(DensifyConfig(), 5000)
    assert ev["densify"] == list(range(200, 2901, 100))
    assert ev["prune_big"] == list(range(400, 2901, 100))
    assert ev["reset"] == list(range(300, 3001, 300))
    off = event_steps(DensifyConfig(enabled=False), 5000)
    assert off == {"densify": [], "prune_big": [], "reset": []}
    # A window that does not start on a multiple: the first event is the first multiple inside it.
    odd = DensifyConfig(start_step=250, stop_step=520, every=100, opacity_reset_every=0)
    assert event_steps(odd, 1000) == {"densify": [300, 400, 500], "prune_big": [400, 500], "reset": []}
    assert not is_reset_step(0, DensifyConfig())
    assert is_reset_step(3000, DensifyConfig()) and not is_reset_step(3300, DensifyConfig())
    assert is_densify_step(2900, DensifyConfig()) and not is_densify_step(3000, DensifyConfig())


def test_fake_run_events_happen_exactly_on_schedule() -> None:
    cfg = DensifyConfig(max_gaussians=200)
    m = model_with([0.001] * 3 + [0.05] * 3)
    densifier = Densifier(cfg, extent=1.0)
    g = gen(0)
    count_changed, reset_seen = [], []
    for step in range(1, 3101):
        n = m.count
        with torch.no_grad():
            m.params["opacity_logits"].fill_(0.0)  # opacity 0.5: a reset would be visible
        # Gaussian 0 (small, cloned) and the last one (large, split) always have large gradients; the
        # others stay below the threshold.
        ndc = torch.zeros(2, n, 2)
        ndc[:, 0, 0] = 1e-2
        ndc[:, -1, 1] = 1e-2
        ndc[:, 1:-1, 0] = 1e-4
        densifier.accumulate(fake_render(m, ndc, torch.full((2, n), 3.0)), step)
        report = densifier.step(m, step, g)
        assert_optimizer_aligned(m)
        if m.count != n:
            count_changed.append(step)
        if m.opacities.max().item() <= cfg.opacity_reset_value + 1e-6:
            reset_seen.append(step)
            assert report.reset
    expected = event_steps(cfg, 3100)
    assert count_changed == expected["densify"]
    assert reset_seen == expected["reset"]
    assert m.count <= cfg.max_gaussians
    # No statistics are gathered once densification is over.
    assert densifier.counts.sum() == 0


def test_opacity_reset_preserves_lower_opacities_and_zeroes_moments() -> None:
    m = model_with([0.01] * 4)
    adam_step(m, 0)
    with torch.no_grad():
        m.params["opacity_logits"].copy_(inverse_sigmoid(torch.tensor([0.9, 0.5, 0.008, 0.001])))
    assert m.optimizer.state[m.params["opacity_logits"]]["exp_avg"].abs().sum() > 0
    cfg = DensifyConfig(start_step=10_000)  # no densification, only the reset at 300
    report = Densifier(cfg, 1.0).step(m, 300, gen())
    assert report.reset and report.cloned == report.split == report.pruned == 0
    torch.testing.assert_close(m.opacities, torch.tensor([0.01, 0.01, 0.008, 0.001]))
    state = m.optimizer.state[m.params["opacity_logits"]]
    assert torch.all(state["exp_avg"] == 0) and torch.all(state["exp_avg_sq"] == 0)
    assert m.optimizer.state[m.params["means"]]["exp_avg"].abs().sum() > 0


# ---------------------------------------------------------------- clone / split / prune


def test_clone_vs_split_by_scale() -> None:
    cfg = DensifyConfig()
    extent = 2.0  # clone when max scale <= 0.006
    m = model_with([0.005, 0.007, 0.005])
    densifier = Densifier(cfg, extent)
    ndc = torch.tensor([[[1e-3, 0.0], [0.0, 1e-3], [1e-4, 0.0]]])  # third: below the threshold
    densifier.accumulate(fake_render(m, ndc, torch.full((1, 3), 2.0)), 200)
    before = {name: m.params[name].detach().clone() for name in PARAM_NAMES}
    report = densifier.step(m, 200, gen())
    assert (report.cloned, report.split, report.pruned) == (1, 1, 0)
    assert m.count == 3 - 1 + 1 + 2
    means = m.means.detach()
    # Originals 0 and 2 first (order kept), then the clone of 0, then 2 children of 1.
    torch.testing.assert_close(means[0], before["means"][0])
    torch.testing.assert_close(means[1], before["means"][2])
    for name in PARAM_NAMES:
        torch.testing.assert_close(m.params[name][2].detach(), before[name][0])
    children = slice(3, 5)
    torch.testing.assert_close(m.scales[children].detach(), torch.full((2, 3), 0.007 / 1.6))
    torch.testing.assert_close(m.params["quats"][children].detach(), before["quats"][1].expand(2, 4))
    assert (means[children] - before["means"][1]).norm(dim=-1).max() < 0.007 * 6
    assert not torch.equal(means[3], means[4])


def test_densify_masks_threshold_and_boundary() -> None:
    cfg = DensifyConfig(grad_threshold=1.0, percent_dense=0.1)
    grads = torch.tensor([1.0, 0.999, 2.0, 2.0])
    max_scales = torch.tensor([0.1, 0.01, 0.1000001, 0.05])
    clone, split = densify_masks(grads, max_scales, cfg, extent=1.0)
    assert clone.tolist() == [True, False, False, True]
    assert split.tolist() == [False, False, True, False]


def test_split_samples_follow_the_parent_gaussian() -> None:
    n = 20000
    q = torch.nn.functional.normalize(torch.tensor([[0.9, 0.2, -0.3, 0.25]], dtype=torch.float64), dim=-1)
    s = torch.tensor([[0.3, 0.1, 0.02]], dtype=torch.float64)
    means, log_scales = split_samples(
        torch.zeros(n, 3, dtype=torch.float64), torch.log(s).expand(n, 3), q.expand(n, 4), 1, 1.6, gen(4)
    )
    r = quat_to_rotmat(q)[0]
    expected_cov = r @ torch.diag(s[0] ** 2) @ r.T
    cov = means.T @ means / n
    torch.testing.assert_close(cov, expected_cov, atol=3e-3 * 0.09, rtol=0.05)
    torch.testing.assert_close(torch.exp(log_scales), (s / 1.6).expand(n, 3))
    # Two children per parent: child-major order, both from the parent; equal generators, equal samples.
    two, _ = split_samples(torch.ones(3, 3), torch.zeros(3, 3), torch.tensor([[1.0, 0, 0, 0]] * 3), 2, 1.6, gen(1))
    again, _ = split_samples(torch.ones(3, 3), torch.zeros(3, 3), torch.tensor([[1.0, 0, 0, 0]] * 3), 2, 1.6, gen(1))
    assert two.shape == (6, 3) and torch.equal(two, again)


def test_prune_rules_and_big_after() -> None:
    cfg = DensifyConfig()
    opac = torch.tensor([0.004, 0.5, 0.5, 0.5])
    scales = torch.tensor([0.01, 0.01, 0.01, 0.15])
    radii = torch.tensor([1.0, 1.0, 25.0, 1.0])
    assert prune_mask(opac, scales, radii, 300, cfg, 1.0).tolist() == [True, False, False, False]
    assert prune_mask(opac, scales, radii, 301, cfg, 1.0).tolist() == [True, False, True, True]
    assert prune_mask(opac, scales, radii, 400, cfg, 2.0).tolist() == [True, False, True, False]


def test_prune_in_densifier_uses_accumulated_radii() -> None:
    cfg = DensifyConfig()
    m = model_with([0.01] * 4)
    with torch.no_grad():
        m.params["opacity_logits"][0] = inverse_sigmoid(torch.tensor(0.001))
    d = Densifier(cfg, 1.0)
    radii = torch.tensor([[1.0, 30.0, 2.0, 0.0], [1.0, 2.0, 2.0, 0.0]])
    d.accumulate(fake_render(m, torch.zeros(2, 4, 2), radii), 399)
    report = d.step(m, 400, gen())
    assert report.pruned == 2 and m.count == 2
    torch.testing.assert_close(m.means[:, 0].detach(), torch.tensor([2.0, 3.0]))
    assert d.grad_sum.shape == (2,) and d.counts.sum() == 0  # statistics restart after an event


def test_never_prunes_everything() -> None:
    m = model_with([0.01] * 3, opacity=0.001)
    report = Densifier(DensifyConfig(), 1.0).step(m, 200, gen())
    assert m.count == 3 and report.pruned == 0


def test_budget_prefers_largest_gradients() -> None:
    grads = torch.tensor([5.0, 1.0, 3.0, 4.0, 0.0])
    clone = torch.tensor([True, True, False, False, False])
    split = torch.tensor([False, False, True, True, False])
    c, s = limit_to_budget(grads, clone, split, budget=2, split_count=2)
    assert c.tolist() == [True, False, False, False, False] and s.tolist() == [False, False, False, True, False]
    c, s = limit_to_budget(grads, clone, split, budget=10, split_count=2)
    assert torch.equal(c, clone) and torch.equal(s, split)
    c, s = limit_to_budget(grads, clone, split, budget=-3, split_count=2)
    assert not c.any() and not s.any()
    # In the densifier: a model at the cap does not grow.
    m = model_with([0.001] * 4)
    d = Densifier(dataclasses.replace(DensifyConfig(), max_gaussians=5), 1.0)
    d.accumulate(fake_render(m, torch.full((1, 4, 2), 1e-2), torch.ones(1, 4)), 200)
    d.step(m, 200, gen())
    assert m.count == 5


def test_moments_of_survivors_preserved_and_new_ones_zero() -> None:
    cfg = DensifyConfig()
    m = model_with([0.001, 0.05, 0.001, 0.001, 0.05])
    with torch.no_grad():
        m.params["opacity_logits"][3] = inverse_sigmoid(torch.tensor(0.001))  # pruned
    adam_step(m, 0)
    before = {}
    for name in PARAM_NAMES:
        state = m.optimizer.state[m.params[name]]
        before[name] = (state["exp_avg"].clone(), state["exp_avg_sq"].clone())
    d = Densifier(cfg, 1.0)
    ndc = torch.zeros(1, 5, 2)
    ndc[0, 0, 0] = ndc[0, 1, 0] = 1e-2  # clone 0, split 1
    d.accumulate(fake_render(m, ndc, torch.ones(1, 5)), 200)
    report = d.step(m, 200, gen())
    assert (report.cloned, report.split, report.pruned) == (1, 1, 1)
    # Survivors in order: 0, 2, 4, then the clone of 0, then 2 children.
    assert m.count == 6
    assert_optimizer_aligned(m)
    for name, (avg, sq) in before.items():
        state = m.optimizer.state[m.params[name]]
        torch.testing.assert_close(state["exp_avg"][:3], avg[[0, 2, 4]])
        torch.testing.assert_close(state["exp_avg_sq"][:3], sq[[0, 2, 4]])
        assert torch.all(state["exp_avg"][3:] == 0) and torch.all(state["exp_avg_sq"][3:] == 0)
    adam_step(m, 1)  # the optimiser still works on the new tensors
    assert_optimizer_aligned(m)


# ---------------------------------------------------------------- statistics


def test_gradients_accumulate_over_all_views() -> None:
    m = model_with([0.01] * 3)
    d = Densifier(DensifyConfig(), 1.0)
    ndc = torch.tensor(
        [
            [[3e-3, 4e-3], [1e-3, 0.0], [9.0, 9.0]],  # view 0 does not see Gaussian 2
            [[7.0, 7.0], [0.0, 3e-3], [6e-3, 8e-3]],  # view 1 does not see Gaussian 0
        ]
    )
    radii = torch.tensor([[2.0, 5.0, 0.0], [0.0, 7.0, 4.0]])
    d.accumulate(fake_render(m, ndc, radii), 10)
    torch.testing.assert_close(d.grad_sum, torch.tensor([5e-3, 4e-3, 1e-2]))
    torch.testing.assert_close(d.counts, torch.tensor([1.0, 2.0, 1.0]))
    torch.testing.assert_close(d.max_radii_px, torch.tensor([2.0, 7.0, 4.0]))
    d.accumulate(fake_render(m, ndc, radii), 11)
    torch.testing.assert_close(d.counts, torch.tensor([2.0, 4.0, 2.0]))
    torch.testing.assert_close(d.grad_sum / d.counts, torch.tensor([5e-3, 2e-3, 1e-2]))
    restored = Densifier(DensifyConfig(), 1.0)
    restored.load_state_dict(d.state_dict())
    assert torch.equal(restored.counts, d.counts) and torch.equal(restored.max_radii_px, d.max_radii_px)


def test_view_grad_norms_in_ndc_units() -> None:
    px = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0 / W, 4.0 / H]]])
    torch.testing.assert_close(view_grad_norms(px, W, H), torch.tensor([[W / 2, H / 2, 2.5]]))


def test_accumulate_errors_and_no_stats_after_stop() -> None:
    m = model_with([0.01] * 2)
    d = Densifier(DensifyConfig(), 1.0)
    means2d = torch.zeros(1, 2, 2, requires_grad=True)
    out = RenderOutput(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 1), torch.zeros(1, 2, 2, 1),
                       means2d, torch.ones(1, 2), 2, 2)
    with pytest.raises(ValueError, match="backward"):
        d.accumulate(out, 5)
    d.accumulate(fake_render(m, torch.ones(1, 2, 2), torch.ones(1, 2)), 2901)
    assert d.grad_sum.numel() == 0
    d.accumulate(fake_render(m, torch.ones(1, 2, 2), torch.ones(1, 2)), 100)
    m3 = model_with([0.01] * 3)
    with pytest.raises(ValueError, match="reset_stats"):
        d.accumulate(fake_render(m3, torch.ones(1, 3, 2), torch.ones(1, 3)), 101)
    with pytest.raises(ValueError, match="extent"):
        Densifier(DensifyConfig(), 0.0)
    assert math.isfinite(float(d.grad_sum.sum()))
