"""Adaptive density control (3DGS): clone, split, prune and opacity reset, on the reference schedule.

Pure functions make the decisions (schedule predicates, masks, split samples); :class:`Densifier` holds the
statistics between events and applies the decisions to a :class:`~lucid_app.scene.gaussians.GaussianModel`, whose
``append`` / ``keep`` / ``reset_opacity`` keep the Adam moments aligned with the parameters.

Schedule (steps count from 1, all bounds inclusive, periods measured from step 0):

- statistics are accumulated on every step ``<= stop_step``;
- densify + prune on steps ``start_step <= step <= stop_step`` with ``step % every == 0``
  (reference: 200, 300, ..., 2900);
- screen-size / world-size pruning only on those steps with ``step > prune_big_after``;
- opacity reset on steps ``step % opacity_reset_every == 0`` with ``step <= opacity_reset_until``
  (reference: 300, 600, ..., 3000); on a step that also densifies, the reset comes after densification.

Nothing happens when ``DensifyConfig.enabled`` is false or a period is not positive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from lucid_app.config import DensifyConfig
from lucid_app.render.base import RenderOutput
from lucid_app.render.projection import quat_to_rotmat
from lucid_app.scene.gaussians import GaussianModel

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- schedule predicates (pure)


def is_stats_step(step: int, cfg: DensifyConfig) -> bool:
    """Whether screen-space statistics are still needed at ``step`` (some densification is yet to come)."""
    return cfg.enabled and cfg.every > 0 and step <= cfg.stop_step


def is_densify_step(step: int, cfg: DensifyConfig) -> bool:
    """Clone/split/prune at ``step``: ``start_step <= step <= stop_step`` and ``step % every == 0``."""
    return cfg.enabled and cfg.every > 0 and (cfg.start_step <= step <= cfg.stop_step) and (step % cfg.every == 0)


def prunes_big(step: int, cfg: DensifyConfig) -> bool:
    """Whether a densify step also prunes Gaussians too large on screen or in the world."""
    return step > cfg.prune_big_after


def is_reset_step(step: int, cfg: DensifyConfig) -> bool:
    """Opacity reset at ``step``: ``step % opacity_reset_every == 0`` and ``step <= opacity_reset_until``.

    Written with each clause parenthesised: gsplat 1.5.3 combined a modulo and a comparison without them, which
    silently disabled its reset.
    """
    return (
        cfg.enabled
        and (cfg.opacity_reset_every > 0)
        and (step > 0)
        and (step % cfg.opacity_reset_every == 0)
        and (step <= cfg.opacity_reset_until)
    )


def event_steps(cfg: DensifyConfig, last_step: int) -> dict[str, list[int]]:
    """Steps 1..``last_step`` on which each event happens: ``densify``, ``prune_big``, ``reset``."""
    steps = range(1, last_step + 1)
    return {
        "densify": [s for s in steps if is_densify_step(s, cfg)],
        "prune_big": [s for s in steps if is_densify_step(s, cfg) and prunes_big(s, cfg)],
        "reset": [s for s in steps if is_reset_step(s, cfg)],
    }


# ---------------------------------------------------------------- decisions (pure)


def view_grad_norms(means2d_grad: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Screen-space gradient norms in NDC units, per view.

    The renderer's ``means2d`` are pixels; NDC spans 2 units over W (or H) pixels, so d/d(ndc) = d/d(px) * W/2.
    3DGS's threshold (``grad_threshold``) is in these units.

    Args:
        means2d_grad: [C, N, 2] gradient of the loss w.r.t. the projected centres (pixels).

    Returns:
        [C, N] norms.
    """
    scale = torch.tensor([width / 2.0, height / 2.0], dtype=means2d_grad.dtype, device=means2d_grad.device)
    return (means2d_grad * scale).norm(dim=-1)


def average_grads(grad_sum: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[N] mean gradient norm over the views that saw each Gaussian (0 where none did)."""
    return torch.where(counts > 0, grad_sum / counts.clamp_min(1), torch.zeros_like(grad_sum))


def densify_masks(
    grads: torch.Tensor, max_scales: torch.Tensor, cfg: DensifyConfig, extent: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which Gaussians to clone and which to split.

    Both need a mean gradient ``>= grad_threshold``; small ones (largest scale ``<= percent_dense * extent``)
    are cloned (under-reconstruction), large ones split (over-reconstruction).

    Args:
        grads: [N] mean screen-space gradient norms (NDC units).
        max_scales: [N] largest activated scale of each Gaussian.

    Returns:
        (clone [N] bool, split [N] bool), disjoint.
    """
    high = grads >= cfg.grad_threshold
    small = max_scales <= cfg.percent_dense * extent
    return high & small, high & ~small


def limit_to_budget(
    grads: torch.Tensor, clone: torch.Tensor, split: torch.Tensor, budget: int, split_count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Restrict clone/split so at most ``budget`` Gaussians are added, preferring the largest gradients.

    A clone adds 1 Gaussian, a split ``split_count - 1`` (its children replace it).
    """
    cost = clone.long() + split.long() * (split_count - 1)
    if int(cost.sum()) <= budget:
        return clone, split
    candidates = torch.nonzero(clone | split).squeeze(1)
    order = candidates[torch.argsort(grads[candidates], descending=True, stable=True)]
    chosen = order[torch.cumsum(cost[order], dim=0) <= max(budget, 0)]
    keep = torch.zeros_like(clone)
    keep[chosen] = True
    return clone & keep, split & keep


def prune_mask(
    opacities: torch.Tensor,
    max_scales: torch.Tensor,
    max_radii_px: torch.Tensor,
    step: int,
    cfg: DensifyConfig,
    extent: float,
) -> torch.Tensor:
    """[N] bool, true for Gaussians to remove: nearly transparent, and after ``prune_big_after`` too big on
    screen (``max_radii_px > max_screen_px``) or in the world (``max_scales > max_world_scale * extent``)."""
    mask = opacities < cfg.prune_opacity
    if prunes_big(step, cfg):
        mask = mask | (max_radii_px > cfg.max_screen_px) | (max_scales > cfg.max_world_scale * extent)
    return mask


def split_samples(
    means: torch.Tensor,
    log_scales: torch.Tensor,
    quats: torch.Tensor,
    count: int,
    scale_div: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Children of split Gaussians: centres drawn from each parent's Gaussian, scales divided by ``scale_div``.

    Args:
        means: [M, 3]; log_scales: [M, 3]; quats: [M, 4] of the parents.
        count: children per parent.

    Returns:
        (means [count*M, 3], log_scales [count*M, 3]); rows are ordered child-major (all first children, then
        all second children, ...), matching ``tensor.repeat(count, ...)`` of the parents' other parameters.
    """
    scales = torch.exp(log_scales).repeat(count, 1)
    noise = torch.randn(scales.shape, generator=generator, device=generator.device).to(scales)
    offsets = (quat_to_rotmat(quats).repeat(count, 1, 1) @ (noise * scales)[..., None])[..., 0]
    child_log_scales = torch.log(scales / scale_div)
    return means.repeat(count, 1) + offsets, child_log_scales


# ---------------------------------------------------------------- the state object


@dataclass
class DensifyReport:
    """What one call of :meth:`Densifier.step` did."""

    step: int
    cloned: int = 0
    split: int = 0
    pruned: int = 0
    reset: bool = False
    count: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.cloned or self.split or self.pruned or self.reset)


class Densifier:
    """Screen-space statistics between densification events, and the events themselves.

    Gradient statistics come from **every view of the batch**: for each view c and each Gaussian visible in it
    (``radii[c] > 0``) the NDC-unit norm of ``means2d.grad[c]`` is added and the view counted; the decision uses
    the mean over all (step, view) pairs that saw the Gaussian. The reference LucidDreamer code uses only the
    last view's gradient (with the union of all views' visibility), which discards C-1 of the C views'
    information and biases the mean downwards for Gaussians the last view did not see. No 1/C compensation is
    applied: the guidance injects each view's gradient unaveraged, as the reference does.

    Args:
        cfg: the schedule and thresholds.
        extent: scene extent (world units) that ``percent_dense`` and ``max_world_scale`` are relative to.
    """

    def __init__(self, cfg: DensifyConfig, extent: float) -> None:
        if extent <= 0:
            raise ValueError(f"scene extent must be positive, got {extent}")
        self.cfg = cfg
        self.extent = float(extent)
        self.grad_sum = torch.zeros(0)
        self.counts = torch.zeros(0)
        self.max_radii_px = torch.zeros(0)

    def _ensure(self, n: int, device: torch.device) -> None:
        if self.grad_sum.shape[0] != n or self.grad_sum.device != device:
            if self.grad_sum.numel() and self.grad_sum.shape[0] != n:
                raise ValueError(
                    f"densification statistics cover {self.grad_sum.shape[0]} Gaussians, the model has {n}; "
                    "call reset_stats() after changing the Gaussians outside Densifier.step"
                )
            self.reset_stats(n, device)

    def reset_stats(self, n: int, device: torch.device | str = "cpu") -> None:
        """Zero the statistics for ``n`` Gaussians."""
        self.grad_sum = torch.zeros(n, device=device)
        self.counts = torch.zeros(n, device=device)
        self.max_radii_px = torch.zeros(n, device=device)

    @torch.no_grad()
    def accumulate(self, output: RenderOutput, step: int) -> None:
        """Add the screen-space gradients of one rendered batch; call after ``loss.backward()``.

        Args:
            output: the render whose ``means2d`` [C, N, 2] has a ``.grad`` and ``radii`` [C, N] are pixels.
            step: the current step; nothing is recorded once no densification is left.
        """
        if not is_stats_step(step, self.cfg):
            return
        grad = output.means2d.grad
        if grad is None:
            raise ValueError("RenderOutput.means2d has no gradient: call backward() on a loss of this render first")
        n = grad.shape[1]
        self._ensure(n, grad.device)
        visible = output.radii > 0
        norms = view_grad_norms(grad, output.width, output.height)
        self.grad_sum += torch.where(visible, norms, torch.zeros_like(norms)).sum(dim=0)
        self.counts += visible.sum(dim=0).to(self.counts.dtype)
        self.max_radii_px = torch.maximum(self.max_radii_px, output.radii.detach().amax(dim=0).to(self.max_radii_px))

    @torch.no_grad()
    def step(self, model: GaussianModel, step: int, generator: torch.Generator) -> DensifyReport:
        """Run the events scheduled for ``step`` (after ``accumulate``, before ``optimizer.step()``)."""
        report = DensifyReport(step=step, count=model.count)
        if is_densify_step(step, self.cfg):
            self._ensure(model.count, model.device)
            self._densify_and_prune(model, step, generator, report)
            self.reset_stats(model.count, model.device)
        if is_reset_step(step, self.cfg):
            model.reset_opacity(self.cfg.opacity_reset_value)
            report.reset = True
        report.count = model.count
        if report.changed:
            logger.info(
                "step %d: cloned %d, split %d, pruned %d%s -> %d Gaussians",
                step, report.cloned, report.split, report.pruned, ", opacity reset" if report.reset else "",
                report.count,
            )
        return report

    def _densify_and_prune(
        self, model: GaussianModel, step: int, generator: torch.Generator, report: DensifyReport
    ) -> None:
        cfg = self.cfg
        n = model.count
        grads = average_grads(self.grad_sum, self.counts)
        max_scales = model.scales.detach().amax(dim=-1)
        clone, split = densify_masks(grads, max_scales, cfg, self.extent)
        clone, split = limit_to_budget(grads, clone, split, cfg.max_gaussians - n, cfg.split_count)
        radii = self.max_radii_px

        # 1. Clones: exact copies (the optimiser moves them apart); they inherit the screen radius.
        if clone.any():
            model.append(model.raw_subset(clone))
            radii = torch.cat([radii, radii[clone]])
            split = torch.cat([split, torch.zeros(int(clone.sum()), dtype=torch.bool, device=split.device)])

        # 2. Splits: children sampled from the parent, parents removed. Children's screen size is unknown (0).
        if split.any():
            parents = model.raw_subset(split)
            children = {name: t.repeat(cfg.split_count, *([1] * (t.dim() - 1))) for name, t in parents.items()}
            children["means"], children["log_scales"] = split_samples(
                parents["means"], parents["log_scales"], parents["quats"], cfg.split_count, cfg.split_scale_div,
                generator,
            )
            model.append(children)
            n_children = children["means"].shape[0]
            keep = torch.cat([~split, torch.ones(n_children, dtype=torch.bool, device=split.device)])
            model.keep(keep)
            radii = torch.cat([radii, torch.zeros(n_children, device=radii.device)])[keep]

        # 3. Prune on the densified set.
        prune = prune_mask(model.opacities.detach(), model.scales.detach().amax(dim=-1), radii, step, cfg, self.extent)
        if bool(prune.all()):
            logger.warning("step %d: pruning would remove all %d Gaussians; skipped", step, model.count)
        elif prune.any():
            model.keep(~prune)
            report.pruned = int(prune.sum())
        report.cloned = int(clone.sum())
        report.split = int(split.sum())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The statistics since the last event, for checkpoints."""
        return {name: getattr(self, name).clone() for name in ("grad_sum", "counts", "max_radii_px")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("grad_sum", "counts", "max_radii_px"):
            setattr(self, name, state[name].clone())
