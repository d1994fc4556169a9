"""What a finished run folder holds, read back for the app: its steps (``metrics.jsonl``), its final views and how it
ended, so that reopening a past run shows what the live run showed (issue 27). Reads only; numpy, no torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from lucid_app.app.preview_grid import tile_views
from lucid_app.io.run_layout import METRICS_NAME, VIEW_GLOB
from lucid_app.train.events import StepEvent

logger = logging.getLogger(__name__)

# The final views shown for a run: the evaluation ring's views nearest these azimuths (front, side, back, side, as
# the live preview), in the ring's order (``export_run``: view i at i·360°/n from the front).
SHOWN_AZIMUTHS_DEG = (0.0, 90.0, 180.0, 270.0)


@dataclass(frozen=True)
class RunRecord:
    """A run folder read back: its logged steps, its last status record (``status`` ``done`` / ``stopped`` /
    ``failed``, ``message``, ``step``; empty when the run did not end), and the paths of its final views."""

    steps: tuple[StepEvent, ...]
    status: dict[str, object]
    views: tuple[Path, ...]


def read_steps(metrics: Path) -> tuple[tuple[StepEvent, ...], dict[str, object]]:
    """The StepEvents of a ``metrics.jsonl`` (its per-step records, in order; a resumed run's repeated steps keep the
    last) and its last status record. Lines that are not such records (control and prompt changes, a torn last
    line) are skipped."""
    by_step: dict[int, StepEvent] = {}
    status: dict[str, object] = {}
    if not metrics.is_file():
        return (), status
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "status" in record:
            status = record
        elif "loss_total" in record and "step" in record:
            event = _step_event(record)
            by_step[event.step] = event
    steps = tuple(by_step[k] for k in sorted(by_step))
    return steps, status


def _step_event(record: dict[str, object]) -> StepEvent:
    losses = {key[len("loss_"):]: float(value) for key, value in record.items() if key.startswith("loss_")}
    return StepEvent(
        step=int(record["step"]), total_steps=int(record.get("total_steps", 0) or 0), losses=losses,
        t=float(record.get("t", 0.0)), s=float(record.get("s", 0.0)), delta_t=float(record.get("delta_t", 0.0)),
        grad_norm=float(record.get("grad_norm", 0.0)), guidance_scale=float(record.get("guidance_scale", 0.0)),
        n_gaussians=int(record.get("n_gaussians", 0)), seconds=float(record.get("seconds", 0.0)),
        skipped=bool(record.get("skipped", False)), densify=dict(record.get("densify", {}) or {}),
    )


def shown_views(paths: list[Path]) -> tuple[Path, ...]:
    """The views of an evaluation ring (in ring order) nearest :data:`SHOWN_AZIMUTHS_DEG`, each once."""
    n = len(paths)
    if n <= len(SHOWN_AZIMUTHS_DEG):
        return tuple(paths)
    picked = dict.fromkeys(round(azimuth / 360.0 * n) % n for azimuth in SHOWN_AZIMUTHS_DEG)
    return tuple(paths[i] for i in picked)


def read_run(run_dir: Path) -> RunRecord:
    """The run folder's steps, status and final views (see :class:`RunRecord`)."""
    steps, status = read_steps(run_dir / METRICS_NAME)
    return RunRecord(steps=steps, status=status, views=shown_views(sorted(run_dir.glob(VIEW_GLOB))))


def views_image(views: tuple[Path, ...] | list[Path]) -> np.ndarray | None:
    """The views [H, W, 3] uint8 tiled into one grid (as the live preview), at their own size; None when there are
    none or one cannot be read (logged)."""
    try:
        images = [np.asarray(iio.imread(path))[..., :3] for path in views]
    except (OSError, ValueError) as err:
        logger.warning("final views not shown: %s", err)
        return None
    if not images or len({image.shape for image in images}) != 1:
        return None
    return tile_views(np.stack(images))


def views_psnr(a: tuple[Path, ...] | list[Path], b: tuple[Path, ...] | list[Path]) -> float | None:
    """PSNR (dB, peak 1) between two runs' final views, view by view (the same cameras), over all their pixels:
    10·log10(1 / MSE). None when the views are missing, differ in number or size, or cannot be read."""
    if not a or len(a) != len(b):
        return None
    try:
        x = np.stack([np.asarray(iio.imread(path))[..., :3] for path in a]).astype(np.float64) / 255.0
        y = np.stack([np.asarray(iio.imread(path))[..., :3] for path in b]).astype(np.float64) / 255.0
    except (OSError, ValueError):
        return None
    if x.shape != y.shape:
        return None
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(1.0 / mse))


__all__ = ["RunRecord", "SHOWN_AZIMUTHS_DEG", "read_run", "read_steps", "shown_views", "views_image", "views_psnr"]
