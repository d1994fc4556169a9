"""When the training loop's periodic outputs are due, and the metrics log of a resumed run.

The trainer (:mod:`lucid_app.train.trainer`) produces the outputs; this module only decides when:

1. Previews (:data:`PREVIEW_SIZE_PX` per view whatever the training resolution; the first, at
   :data:`PREVIEW_FIRST_SIZE_PX`, is cheap: the initial Gaussians are large and cover many pixels) come after the
   first step of a run, then every ``preview_every`` steps and whenever :data:`PREVIEW_INTERVAL_S` seconds of wall time
   have passed since the last one, so the app shows the object forming within seconds even at a second per step
   (``preview_every = 0``: none).
2. Checkpoints come every ``export.checkpoint_every`` steps and whenever ``export.checkpoint_every_s`` seconds have
   passed since the last one (so a kill loses at most that).

:func:`preview_due` and :func:`checkpoint_due` are the rules as pure predicates; :class:`OutputClock` reads the clocks
(``time.monotonic`` for checkpoints, ``time.perf_counter`` for previews; tests replace this module's ``time``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lucid_app.config import CameraConfig, ExportConfig
from lucid_app.io.files import write_text
from lucid_app.render.cameras import CameraBatch, orbit_cameras

PREVIEW_AZIMUTHS_DEG = (0.0, 90.0, 180.0, -90.0)
# Previews are rendered at this size per view (independent of the training resolution); the first one, which must
# come within seconds, at the smaller size (the app enlarges it) ...
PREVIEW_SIZE_PX = 256
PREVIEW_FIRST_SIZE_PX = 128
# ... after step 1, then at least this often in wall time, and never taking more than 1/PREVIEW_COST_RATIO of it.
PREVIEW_INTERVAL_S = 2.0
PREVIEW_COST_RATIO = 5.0


def preview_cameras(cameras: CameraConfig, size_px: int) -> CameraBatch:
    """The fixed preview cameras (front, sides, back: :data:`PREVIEW_AZIMUTHS_DEG`), ``size_px`` square, at the
    config's default polar angle, radius and field of view."""
    n = len(PREVIEW_AZIMUTHS_DEG)
    return orbit_cameras(
        torch.tensor(PREVIEW_AZIMUTHS_DEG), torch.full((n,), cameras.default_polar_deg),
        torch.full((n,), cameras.default_radius), torch.full((n,), cameras.default_fovy_rad), size_px, size_px,
    )


def preview_due(step: int, last_preview_step: int, preview_every: int, since_last_s: float, cost_s: float) -> bool:
    """After ``step``: a preview when none came yet in this run (``last_preview_step < 0``), every ``preview_every``
    steps, and whenever :data:`PREVIEW_INTERVAL_S` (or :data:`PREVIEW_COST_RATIO` times the last preview's cost
    ``cost_s``) has passed; none at all with ``preview_every = 0``."""
    if preview_every <= 0:
        return False
    if last_preview_step < 0 or step % preview_every == 0:
        return True
    return since_last_s >= max(PREVIEW_INTERVAL_S, PREVIEW_COST_RATIO * cost_s)


def checkpoint_due(step: int, export: ExportConfig, since_last_s: float) -> bool:
    """After ``step``: every ``export.checkpoint_every`` steps, or ``export.checkpoint_every_s`` seconds after the last
    checkpoint (0 turns either off)."""
    every, every_s = export.checkpoint_every, export.checkpoint_every_s
    return (every > 0 and step % every == 0) or (every_s > 0 and since_last_s >= every_s)


class OutputClock:
    """The last preview's step, time and cost, and the last checkpoint's time, of one run.

    :meth:`start` when the loop starts; after each step ask :meth:`preview_size` and :meth:`checkpoint_due`, and report
    what was made with :meth:`preview_made` / :meth:`checkpoint_made`.
    """

    def __init__(self) -> None:
        self.last_preview_step = -1
        self.checkpoint_s = 0.0
        self.preview_s = 0.0
        self.preview_cost_s = 0.0

    def start(self) -> None:
        """The loop starts: the intervals count from now."""
        self.checkpoint_s = time.monotonic()
        self.preview_s = time.perf_counter()
        self.preview_cost_s = 0.0

    def preview_size(self, step: int, preview_every: int) -> int | None:
        """The size (px) of the preview due after ``step``, or None when none is due."""
        since_last_s = time.perf_counter() - self.preview_s
        if not preview_due(step, self.last_preview_step, preview_every, since_last_s, self.preview_cost_s):
            return None
        return PREVIEW_FIRST_SIZE_PX if self.last_preview_step < 0 else PREVIEW_SIZE_PX

    def preview_made(self, step: int, started_s: float) -> None:
        """The preview of ``step``, begun at ``started_s`` (``time.perf_counter``), was handed out."""
        self.last_preview_step = step
        self.preview_s = time.perf_counter()
        self.preview_cost_s = self.preview_s - started_s

    def checkpoint_due(self, step: int, export: ExportConfig) -> bool:
        """Whether a checkpoint is due after ``step`` (:func:`checkpoint_due`)."""
        return checkpoint_due(step, export, time.monotonic() - self.checkpoint_s)

    def checkpoint_made(self) -> None:
        self.checkpoint_s = time.monotonic()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the records of steps ≤ ``last_step`` (the ones a resumed checkpoint already contains), so the log
    of a resumed run has each step once."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(record.get("step", 0)) <= last_step and "status" not in record:
            kept.append(line)
    write_text(path, "".join(f"{line}\n" for line in kept))
