"""A job's peak memory and time, estimated from its settings before it starts, and the server's limits on them.

The app refuses a job whose estimate exceeds its limits with one line (``app.py --max-job-gb``,
``--max-job-hours``), e.g. "this job needs ~7.1 GB; this server allows 4 GB (--max-job-gb)", before any memory is
taken; the worker process's address-space cap (``app/job_worker.py``) catches what the estimate misses.

The estimate (:func:`estimate_job`) is a pure function of the config and a few facts about its model
(:class:`ModelFacts`: its kind, the multi-view dataset's image count, the weights' size; :func:`model_facts` reads
them). Memory, in bytes, is the process itself (interpreter, torch, the trainer's modules: :data:`BASE_BYTES`) plus
the larger of two phases:
1. loading: the multi-view prior decodes every image of its dataset and holds it at ``multiview_resolution`` R
   several times over while it builds its tables (``MV_LOAD_BYTES`` per value of the N × 3R² dataset, plus each
   image's decoding); the other priors load their weights;
2. training: the prior as it stays (the multi-view prior's float32 images and float64 table: ``MV_BYTES`` per
   value; weights and activations per rendered pixel for the others), the trainer's working set, the Gaussians'
   parameters, gradients and Adam moments (``GAUSSIAN_BYTES`` each), their projections and tile lists per view
   (``VIEW_GAUSSIAN_BYTES`` per view and Gaussian), the renders (``PIXEL_BYTES`` per pixel and view), and at the
   end the mesh's density grid when the run exports one. G is the most Gaussians the run can hold
   (``init.num_points``, or densification's ``max_gaussians`` when it can grow).
Time is steps × the seconds of a step (a constant plus terms per (view, Gaussian), per rendered pixel and per
dataset value of the multi-view prior) plus the export's (per turntable and view frame, by its pixels and
Gaussians). The memory constants were fitted to peak resident sizes measured on the 2-core CPU machine
(``bench/job_memory.py``; docs/BENCHMARKS.md, "Job limits": the estimate is an upper bound within the ratios
reported there), Stable Diffusion's to "One full-size step" (float32; half precision halves them); the times to
that file's figures on an idle machine, within about a factor of two. On a CUDA device no time is estimated
(:attr:`JobEstimate.seconds` is None) and only the memory limit applies.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lucid_app.config import ConfigError, ModelConfig, TrainConfig
from lucid_app.priors.model_ref import parse_model_ref

logger = logging.getLogger(__name__)

GB = 1e9
ModelKind = Literal["multiview", "learned", "stable-diffusion"]

# --- memory (bytes), fitted on the 2-core CPU machine (module docstring)
BASE_BYTES = 0.45e9
MV_LOAD_BYTES = 29.0
MV_IMAGE_BYTES = 30e3
MV_BYTES = 16.0
TRAIN_BYTES = 0.07e9
GAUSSIAN_BYTES = 300.0
VIEW_GAUSSIAN_BYTES = 1_200.0
PIXEL_BYTES = 300.0
# The learned miniature prior: activations per rendered pixel and view (its weights are the folder's files).
LEARNED_PIXEL_BYTES = 2_000.0
# Stable Diffusion 2.1 base in float32 on a CPU ("One full-size step": the model 5.3 GB; a 4-view step 6.65 GB at
# 256², 8.85 GB at 512²: 0.62 GB plus 2.8 kB per rendered pixel and view above the model).
SD_WEIGHTS_BYTES = 5.3e9
SD_STEP_BYTES = 0.62e9
SD_PIXEL_BYTES = 2_800.0
# The mesh export's density grid and marching cubes per voxel ("Mesh export": 100k Gaussians at 256³, 0.84 GB).
MESH_VOXEL_BYTES = 20.0

# --- time (seconds) of a step and of the export on that machine's CPU, idle
STEP_S = 0.05
VIEW_GAUSSIAN_S = 8e-6
PIXEL_S = 2e-7
MV_VALUE_S = 2e-9
LEARNED_PIXEL_S = 2e-5
SD_STEP_S = 413.0
FRAME_S = 0.01
FRAME_PIXEL_S = 2e-7
FRAME_GAUSSIAN_S = 2e-6
MESH_VOXEL_S = 2e-7


@dataclass(frozen=True)
class ModelFacts:
    """What the estimate needs to know of a model: its kind, a multi-view dataset's image count (train and test
    views of every object) and the size of its weights on disk (bytes; 0 when unknown or none)."""

    kind: ModelKind
    images: int = 0
    weights_bytes: float = 0.0


@dataclass(frozen=True)
class JobEstimate:
    """A job's estimated peak memory (``peak_gb``, the process's resident size at its peak) and time: seconds per
    step and of the export (None where the device's times are not known), for ``steps`` steps."""

    peak_gb: float
    step_s: float | None
    export_s: float | None
    steps: int

    @property
    def seconds(self) -> float | None:
        """The whole job's time (None when unknown)."""
        return None if self.step_s is None or self.export_s is None else self.step_s * self.steps + self.export_s


class JobTooLarge(ValueError):
    """A job whose estimate exceeds the server's limits; the message is the one line the user sees."""


def model_facts(model: ModelConfig) -> ModelFacts:
    """The facts of ``model`` for :func:`estimate_job`, by the kind its reference names (``parse_model_ref``): a
    multi-view dataset's image count (from its transforms files), a learned prior's weights (its folder's size);
    anything else is Stable Diffusion."""
    try:
        ref = parse_model_ref(model.id)
    except ConfigError:  # not a reference at all: the loader says so when the job starts
        return ModelFacts("stable-diffusion", weights_bytes=SD_WEIGHTS_BYTES)
    if ref.kind == "multiview":
        return ModelFacts("multiview", images=_dataset_images(Path(ref.location)))
    if ref.kind == "learned":
        folder = Path(ref.location)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        return ModelFacts("learned", weights_bytes=float(size))
    return ModelFacts("stable-diffusion", weights_bytes=SD_WEIGHTS_BYTES)


def _dataset_images(root: Path) -> int:
    """The frames of every ``transforms_*.json`` in a multi-view dataset folder (one object, or one per sub-folder);
    0 when there are none (the prior's loader names what is missing)."""
    files = [*root.glob("transforms_*.json"), *root.glob("*/transforms_*.json")]
    count = 0
    for path in files:
        try:
            frames = json.loads(path.read_text(encoding="utf-8")).get("frames", [])
        except (OSError, ValueError, AttributeError):
            continue
        count += len(frames) if isinstance(frames, list) else 0
    return count


def peak_gaussians(config: TrainConfig) -> int:
    """The most Gaussians the run can hold: the initial count, or densification's cap when it can grow past it."""
    d = config.densify
    grows = d.enabled and d.every > 0 and d.start_step <= min(d.stop_step, config.optim.steps)
    return max(config.init.num_points, d.max_gaussians) if grows else config.init.num_points


def estimate_job(config: TrainConfig, facts: ModelFacts, device_type: str = "cpu") -> JobEstimate:
    """The peak memory and time of ``config`` on a ``device_type`` device (module docstring for the terms).

    Args:
        config: the run's config. facts: its model's (:func:`model_facts`). device_type: ``cpu`` or ``cuda``.

    Returns:
        The estimate; its times are None on a device other than the CPU.
    """
    views = config.cameras.batch_size
    view_pixels = views * config.render.width * config.render.height
    gaussians = peak_gaussians(config)
    exp = config.export
    loading, staying, prior_step_s = _prior_cost(config, facts, view_pixels, device_type)
    gaussian_bytes = GAUSSIAN_BYTES * gaussians + VIEW_GAUSSIAN_BYTES * views * gaussians
    mesh = MESH_VOXEL_BYTES * exp.mesh_resolution**3 if exp.mesh else 0.0
    training = staying + TRAIN_BYTES + max(gaussian_bytes + PIXEL_BYTES * view_pixels, mesh)
    peak = BASE_BYTES + max(loading, training)
    if device_type != "cpu":
        return JobEstimate(peak_gb=peak / GB, step_s=None, export_s=None, steps=config.optim.steps)
    step_s = STEP_S + VIEW_GAUSSIAN_S * views * gaussians + PIXEL_S * view_pixels + prior_step_s
    frames = exp.turntable_frames + exp.eval_views
    frame_s = FRAME_S + FRAME_PIXEL_S * exp.turntable_size**2 + FRAME_GAUSSIAN_S * gaussians
    export_s = frames * frame_s + (MESH_VOXEL_S * exp.mesh_resolution**3 if exp.mesh else 0.0)
    return JobEstimate(peak_gb=peak / GB, step_s=step_s, export_s=export_s, steps=config.optim.steps)


def _prior_cost(config: TrainConfig, facts: ModelFacts, view_pixels: int,
                device_type: str) -> tuple[float, float, float]:
    """The prior's (bytes while it loads, bytes while it stays, seconds per step)."""
    if facts.kind == "multiview":
        values = facts.images * 3 * config.model.multiview_resolution**2
        loading = MV_IMAGE_BYTES * facts.images + MV_LOAD_BYTES * values
        return loading, MV_BYTES * values, MV_VALUE_S * values * config.cameras.batch_size
    if facts.kind == "learned":
        staying = facts.weights_bytes + LEARNED_PIXEL_BYTES * view_pixels
        return facts.weights_bytes, staying, LEARNED_PIXEL_S * view_pixels
    scale = view_pixels / (4 * 512 * 512)
    # Measured in float32; half precision (the default on CUDA) halves weights and activations.
    half = 0.5 if _dtype_bytes(config.model.dtype, device_type) == 2 else 1.0
    weights = half * facts.weights_bytes
    return weights, weights + half * (SD_STEP_BYTES + SD_PIXEL_BYTES * view_pixels), SD_STEP_S * scale


def _dtype_bytes(dtype: str, device_type: str) -> int:
    """Bytes per value of a model's ``dtype`` on a device (``auto``: half precision on CUDA, as
    ``config.devices.resolve_dtype`` picks)."""
    if dtype == "auto":
        return 2 if device_type == "cuda" else 4
    return 4 if dtype == "float32" else 2


def format_hours(seconds: float) -> str:
    """A duration for a refusal: "35 min", "2.5 h", "21 days"."""
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


@dataclass(frozen=True)
class JobLimits:
    """The server's limits on one job (None: no limit) and the device jobs run on.

    Attributes:
        max_gb: the most memory a job may need (``app.py --max-job-gb``).
        max_hours: the longest a job may take (``app.py --max-job-hours``; applies on a CPU, where times are known).
        device_type: ``cpu`` or ``cuda``: whose times the estimate uses.
    """

    max_gb: float | None = None
    max_hours: float | None = None
    device_type: str = "cpu"

    def refusal(self, config: TrainConfig, estimate: JobEstimate) -> str | None:
        """The one-line refusal of a job with ``estimate``, or None when it fits."""
        if self.max_gb is not None and estimate.peak_gb > self.max_gb:
            return (f"this job needs ~{estimate.peak_gb:.1f} GB; this server allows {self.max_gb:g} GB "
                    f"(--max-job-gb): lower the resolution, points, views or multi-view resolution")
        seconds = estimate.seconds
        if self.max_hours is not None and seconds is not None and seconds > self.max_hours * 3600:
            return (f"this job needs ~{format_hours(seconds)} on this server's CPU ({config.optim.steps} steps); "
                    f"this server allows {self.max_hours:g} h (--max-job-hours): fewer steps, a smaller setting, or "
                    "the offline demo model")
        return None

    def check(self, config: TrainConfig) -> JobEstimate | None:
        """Estimate ``config`` (reading its model's facts) when a limit is set; returns the estimate.

        Raises:
            JobTooLarge: the estimate exceeds a limit (its one line).
        """
        if self.max_gb is None and self.max_hours is None:
            return None
        estimate = estimate_job(config, model_facts(config.model), self.device_type)
        refusal = self.refusal(config, estimate)
        if refusal is not None:
            logger.info("job refused: %s", refusal)
            raise JobTooLarge(refusal)
        return estimate


__all__ = ["JobEstimate", "JobLimits", "JobTooLarge", "ModelFacts", "estimate_job", "model_facts",
           "peak_gaussians"]
