"""Typed events a training run emits (to the CLI's progress bar, the app, tests). No tensors cross this line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class StepEvent:
    """One finished (or skipped) training step.

    Attributes:
        step: 1-based step number; total_steps: the run's length.
        losses: named scalar terms (``guidance``, ``tv_rgb``, ``tv_depth``, ``scale``) and ``total``.
        t, s, delta_t: the guidance's timestep indices and interval; grad_norm: ‖guidance gradient‖.
        guidance_scale: the CFG scale in force; n_gaussians: count after the step; seconds: wall time of the step.
        skipped: the step had a non-finite loss or gradient and changed nothing.
        densify: what densification did (``cloned``, ``split``, ``pruned``, ``reset``), empty when nothing.
    """

    step: int
    total_steps: int
    losses: dict[str, float]
    t: float
    s: float
    delta_t: float
    grad_norm: float
    guidance_scale: float
    n_gaussians: int
    seconds: float
    skipped: bool = False
    densify: dict[str, int] = field(default_factory=dict)

    def record(self) -> dict[str, object]:
        """The flat JSON record written to ``metrics.jsonl``."""
        return {
            "step": self.step, **{f"loss_{k}": v for k, v in self.losses.items()}, "t": self.t, "s": self.s,
            "delta_t": self.delta_t, "grad_norm": self.grad_norm, "guidance_scale": self.guidance_scale,
            "n_gaussians": self.n_gaussians, "seconds": self.seconds, "skipped": self.skipped,
            **({"densify": self.densify} if self.densify else {}),
        }


@dataclass(frozen=True)
class PreviewEvent:
    """Renders of the current Gaussians from fixed preview cameras: images [V, H, W, 3] uint8."""

    step: int
    images: np.ndarray
    azimuth_deg: tuple[float, ...]


@dataclass(frozen=True)
class DoneEvent:
    """The run ended: ``done`` (all steps), ``stopped`` (stop control or Ctrl-C) or ``failed`` (message says why).

    ``files`` maps output names (``ply``, ``video``, ``config``, ``metrics``, ``checkpoint``, ``views``) to paths.
    """

    status: Literal["done", "stopped", "failed"]
    step: int
    message: str
    files: dict[str, str]


@dataclass(frozen=True)
class TrainedEvent:
    """Training ended (``status`` as :class:`DoneEvent`'s, at ``step``); the end export follows, then the
    :class:`DoneEvent`. The app frees the run's worker slot here, so the next job need not wait for the export."""

    status: Literal["done", "stopped", "failed"]
    step: int
    message: str


@dataclass(frozen=True)
class ExportEvent:
    """The run's end export reached ``stage`` (``model.ply``, ``turntable``, ``mesh``); ``done`` of ``total`` units
    of it (turntable frames; 0 of 0 for a stage without parts)."""

    stage: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class GaussianSnapshot:
    """The live Gaussians of a run between two steps (``Trainer.request_snapshot``): after step ``step``, as CPU
    arrays (a :class:`lucid_app.io.ply.GaussianPly`), with the run's config as YAML at that moment."""

    step: int
    gaussians: object
    config_yaml: str


Event = StepEvent | PreviewEvent | TrainedEvent | ExportEvent | DoneEvent
