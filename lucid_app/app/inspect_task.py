"""The pseudo-GT inspector as a job task: a run's (or a ``.ply``'s) views → grid image + inconsistency numbers.

The app queues :func:`inspect_task` on the job worker (:meth:`lucid_app.app.jobs.JobManager.submit_task`), behind any
training, so it never competes with a run for the device. A run folder is read when the task *starts*: queued
behind the run it inspects, it sees that run's exported ``model.ply`` and final ``config.yaml`` (after an
offline-demo fallback, the demo's model). The task writes ``pseudo_gt.png`` (labelled: method, t, δ_T, negative
variant per row, render and seeds per column) and ``inspect.json`` into its own folder and returns the grid and the
numbers; the maths is :func:`lucid_app.lab.inspector.inspect_pseudo_gt`.

A *running* job is inspected from a snapshot of its live Gaussians (``JobManager.live_gaussians``, taken between two
of its steps): :func:`run_inspect` then runs beside the training, in the caller's thread, instead of queueing behind
it (where it would only start once the run has ended).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from lucid_app.app.run_folders import JobError
from lucid_app.app.tasks import Task, TaskContext, TaskResult
from lucid_app.config import TrainConfig, from_yaml, replace
from lucid_app.io.files import write_text
from lucid_app.io.media import write_png
from lucid_app.io.ply import read_gaussian_ply
from lucid_app.io.run_layout import CONFIG_NAME, METRICS_NAME, RUN_FILES
from lucid_app.lab.inspector import InspectSettings, inspect_pseudo_gt, label_grid, prior_control, render_raw_cameras
from lucid_app.render.cameras import CameraBatch, orbit_cameras, sample_cameras
from lucid_app.train.events import GaussianSnapshot

logger = logging.getLogger(__name__)

CameraMode = Literal["orbit", "training"]
CAMERA_MODES: tuple[str, ...] = ("orbit", "training")
GRID_NAME = "pseudo_gt.png"
NUMBERS_NAME = "inspect.json"
# The pseudo-GT grid's tiles are enlarged to at least this height (issue 27: 64 px tiles showed as ~60 px thumbnails).
INSPECT_TILE_MIN_PX = 128


@dataclass(frozen=True)
class InspectRequest:
    """What to inspect and how; plain values only (the UI builds it).

    Attributes:
        run_dir: a run folder, read when the task starts (its ``config.yaml`` and ``model.ply``); or None with
        ply: a 3DGS ``.ply`` inspected with ``config`` (prompt, model, cameras, render size); or with
        snapshot: a running job's live Gaussians with its config at that step.
        negative: the negative prompt text to inspect with; None = the config's own.
        camera: ``orbit`` = one camera at (azimuth, elevation, radius) with the config's default fovy;
            ``training`` = a batch drawn as training draws it at the run's last step (seeded by the config's seed).
    """

    config: TrainConfig
    run_dir: Path | None = None
    ply: Path | None = None
    snapshot: GaussianSnapshot | None = None
    negative: str | None = None
    camera: CameraMode = "orbit"
    azimuth_deg: float = 0.0
    elevation_deg: float = 0.0
    radius: float = 4.0
    settings: InspectSettings = InspectSettings()


def inspect_task(request: InspectRequest) -> Task:
    """The job task that runs ``request`` (see :func:`run_inspect`)."""
    if request.camera not in CAMERA_MODES:
        raise ValueError(f"inspector camera must be one of {CAMERA_MODES}, got {request.camera!r}")
    if sum(source is not None for source in (request.run_dir, request.ply, request.snapshot)) != 1:
        raise ValueError("inspect a run folder, a .ply file or a running job's snapshot: give exactly one of them")
    return lambda context: run_inspect(request, context)


def run_inspect(request: InspectRequest, context: TaskContext) -> TaskResult:
    """Render the views, compute the pseudo-GTs of SDS and ISM, write the grid and the numbers.

    Returns:
        TaskResult with the grid ([H, W, 3] uint8), the numbers (:func:`inspect_data`) and both files.

    Raises:
        JobError: the run folder has no ``model.ply`` (still queued, cancelled, or failed before exporting).
    """
    config, raw, step = _source(request)
    if request.negative is not None:
        config = replace(config, prompt=replace(config.prompt, negative=request.negative))
    prior = context.load_prior(config.model)
    too_late = [t for t in request.settings.timesteps if t >= prior.num_train_timesteps]
    if too_late:
        raise ValueError(f"t = {too_late[0]}: timestep indices go from 0 to {prior.num_train_timesteps - 1}")
    cameras = _cameras(request, config, step)
    renders = render_raw_cameras(raw, cameras, context.device, config.render.background)
    grid, numbers = inspect_pseudo_gt(prior, renders, cameras.azimuth_deg, config.prompt, config.guidance,
                                      request.settings, progress=context.progress,
                                      control=prior_control(prior, cameras))
    data = inspect_data(numbers, request.settings, config, cameras, request.run_dir)
    if request.snapshot is not None:
        data["live_step"] = step
    tiles = grid.cpu().numpy()
    # Each tile (its gap included) at least INSPECT_TILE_MIN_PX high (nearest neighbour, a whole factor): a 64 px
    # pseudo-GT is a readable picture, not a thumbnail, and the labels stay sharp (drawn after).
    tile_px = max(tiles.shape[0] // max(len(numbers), 1), 1)
    factor = max(1, -(-INSPECT_TILE_MIN_PX // tile_px))
    tiles = tiles.repeat(factor, axis=0).repeat(factor, axis=1)
    image = label_grid(tiles, list(numbers), len(cameras), request.settings.seeds,
                       grid_title(config, step if request.snapshot is not None else None))
    files = {
        "png": str(write_png(context.folder / GRID_NAME, image)),
        "json": str(write_text(context.folder / NUMBERS_NAME, json.dumps(data, indent=2))),
    }
    message = f"inspected {len(numbers)} pseudo-GT rows of {len(cameras)} view(s)"
    logger.info("%s (%s)", message, request.run_dir or request.ply or f"live step {step}")
    return TaskResult(image=image, data=data, files=files, message=message)


def inspect_data(numbers: dict[str, float], settings: InspectSettings, config: TrainConfig, cameras: CameraBatch,
                 run_dir: Path | None) -> dict[str, Any]:
    """The inspector's JSON: the run's folder name (None for a .ply), settings, cameras, the flat ``inconsistency``
    per grid row (as the CLI prints it) and the same numbers nested as
    ``by_method[method]["t<t>"]["dt<δ_T>"][variant]`` (SDS and SDI have the single ``dt0``). The model is the config's
    id (the app shows it to clients without server folders, ``client_config.public_path``)."""
    nested: dict[str, Any] = {}
    for label, value in numbers.items():
        method, t, *rest = label.split("_")
        dt, variant = (rest[0], rest[1]) if len(rest) == 2 else ("dt0", rest[0])
        nested.setdefault(method, {}).setdefault(t, {}).setdefault(dt, {})[variant] = value
    return {
        "run": run_dir.name if run_dir is not None else None, "model": config.model.id, "prompt": config.prompt.text,
        "negative": config.prompt.negative,
        "t": list(settings.timesteps), "delta_t": list(settings.delta_ts), "seeds": settings.seeds,
        "variants": list(settings.negatives), "azimuth_deg": [round(float(a), 3) for a in cameras.azimuth_deg],
        "polar_deg": [round(float(p), 3) for p in cameras.polar_deg], "rows": list(numbers),
        "inconsistency": numbers, "by_method": nested,
    }


def grid_title(config: TrainConfig, live_step: int | None = None) -> str:
    """The grid's title line: prompt, negative prompt, and the step of a live snapshot."""
    negative = config.prompt.negative or "(none)"
    title = f"{config.prompt.text} | negative: {negative[:40]}{'...' if len(negative) > 40 else ''}"
    return title + (f" | live, step {live_step}" if live_step is not None else "")


def _source(request: InspectRequest) -> tuple[TrainConfig, Any, int]:
    """(config, raw Gaussians, the step whose training views to draw — the run's last or the snapshot's, 1-based as
    the trainer counts)."""
    if request.snapshot is not None:
        snapshot = request.snapshot
        return from_yaml(snapshot.config_yaml), snapshot.gaussians, max(snapshot.step, 1)
    if request.run_dir is None:
        return request.config, read_gaussian_ply(Path(request.ply)), 1
    run_dir = Path(request.run_dir)
    ply = run_dir / RUN_FILES["ply"]
    if not ply.is_file():
        raise JobError(f"the run {run_dir.name} has no {ply.name}: it was cancelled or failed before exporting")
    config = from_yaml((run_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    return config, read_gaussian_ply(ply), _last_step(run_dir / METRICS_NAME, config.optim.steps)


def _last_step(metrics: Path, default: int) -> int:
    """The step of the last record of ``metrics.jsonl`` (the run's end), or ``default`` without one."""
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else default
    except (OSError, ValueError, KeyError):
        return default


def _cameras(request: InspectRequest, config: TrainConfig, step: int) -> CameraBatch:
    width, height = config.render.width, config.render.height
    if request.camera == "training":
        generator = torch.Generator().manual_seed(config.seed)
        return sample_cameras(config.cameras, step, width, height, generator)
    return orbit_cameras(
        torch.tensor([float(request.azimuth_deg)]), torch.tensor([90.0 - float(request.elevation_deg)]),
        torch.tensor([float(request.radius)]), torch.tensor([config.cameras.default_fovy_rad]), width, height,
    )
