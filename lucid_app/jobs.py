"""In-process training jobs for the app: one worker thread owns the device and runs one job at a time.

* A FIFO queue; every queued job knows its position (the number of jobs ahead of it, the running one included).
* A model cache, so a prior's weights load once per (model id, device, dtype, model settings).
* Job states ``queued → running ⇄ paused → done | failed``, or ``queued → cancelled``; stopping a running job
  ends it as ``done`` with outcome ``stopped`` after the trainer exported what exists.
* Per-session run folders: ``OUTPUTS/<session>/<time>-<prompt>-<job id>/`` (the trainer writes them; see
  ``run_folders.py``).

Readers (the UI's handlers, tests) never touch a job's mutable state: they get immutable :class:`JobView`
snapshots, and :meth:`JobManager.wait` returns the next one when the job changes. Nothing here starts a thread
before :meth:`JobManager.start`.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch

from lucid_app.avatar import check_avatar
from lucid_app.avatar.body import AvatarError
from lucid_app.config import ConfigError, ModelConfig, TrainConfig, to_yaml
from lucid_app.controls import ControlState, LiveControls
from lucid_app.devices import resolve_device, resolve_dtype
from lucid_app.events import DoneEvent, Event, PreviewEvent, StepEvent
from lucid_app.priors import load_prior
from lucid_app.priors.base import DiffusionPrior, PriorError
from lucid_app.runs import PreparedRun, load_run_prior
from lucid_app.run_folders import JobError, RUN_FILES, run_files, session_folder, slug
from lucid_app.trainer import Trainer, initial_controls

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "paused", "done", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})

PREVIEW_MIN_SIZE_PX = 128


class PriorLoader(Protocol):
    def __call__(self, model: str, config: ModelConfig, device: torch.device | str) -> DiffusionPrior: ...


class RunnableTrainer(Protocol):
    def run(self, on_event: Callable[[Event], None] | None = None) -> DoneEvent: ...


TrainerFactory = Callable[..., RunnableTrainer]


# ---------------------------------------------------------------------------------------------- model cache


class ModelCache:
    """Loaded priors keyed by (model id, device, dtype, the other model settings); each loads once.

    Only the worker thread loads, but the lock keeps ``loads`` and the dict consistent for readers.
    """

    def __init__(self, loader: PriorLoader = load_prior) -> None:
        self._loader = loader
        self._priors: dict[tuple[str, str, str, ModelConfig], DiffusionPrior] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, model: ModelConfig, device: torch.device) -> DiffusionPrior:
        """The prior for ``model`` on ``device``, loading it on first use.

        Raises:
            PriorError: the model cannot be loaded (the loader's message says what to do).
        """
        key = (model.id, str(device), str(resolve_dtype(model.dtype, device)), model)
        with self._lock:
            cached = self._priors.get(key)
        if cached is not None:
            return cached
        logger.info("loading model %s on %s", model.id, device)
        prior = self._loader(model.id, model, device)
        with self._lock:
            self.loads += 1
            self._priors[key] = prior
        return prior


# ---------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobView:
    """An immutable snapshot of one job, safe to hand to another thread.

    Attributes:
        position: jobs ahead of this one (the running one included) while queued; 0 otherwise.
        config_yaml: the resolved config (after a fallback to the offline demo, the demo's).
        notice: set when the offline demo replaced the requested model.
        outcome: the trainer's end status (``done``, ``stopped``, ``failed``), empty before the end.
        steps: every StepEvent so far (for plots); preview: the latest preview views tiled, [H, W, 3] uint8.
        files: output name (``ply``, ``video``, ``config``, ``mesh``, ``metrics``) → path, once they exist.
        version: increases with every change of the job.
    """

    id: str
    session: str
    state: JobState
    position: int
    prompt: str
    total_steps: int
    run_dir: Path
    config_yaml: str
    notice: str | None
    message: str
    outcome: str
    steps: tuple[StepEvent, ...]
    preview: np.ndarray | None
    preview_step: int
    files: dict[str, str]
    controls: ControlState
    version: int

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def last_step(self) -> StepEvent | None:
        return self.steps[-1] if self.steps else None


@dataclass
class _Job:
    id: str
    session: str
    config: TrainConfig
    allow_demo: bool
    run_dir: Path
    controls: LiveControls
    state: JobState = "queued"
    notice: str | None = None
    message: str = ""
    outcome: str = ""
    steps: list[StepEvent] = field(default_factory=list)
    preview: np.ndarray | None = None
    preview_step: int = 0
    files: dict[str, str] = field(default_factory=dict)
    version: int = 0


class JobManager:
    """The app's jobs: a FIFO queue, one worker thread that owns the device, a model cache.

    Args:
        outputs: root folder of all run folders (``OUTPUTS/<session>/<run>/``).
        device: where priors and training run (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        loader: loads a prior (default :func:`lucid_app.priors.load_prior`); tests count its calls.
        trainer_factory: ``(config, prior, run_dir=, controls=, device=) → object with .run(on_event)``.
    """

    def __init__(
        self,
        outputs: str | Path,
        device: str | torch.device = "auto",
        *,
        loader: PriorLoader = load_prior,
        trainer_factory: TrainerFactory = Trainer,
    ) -> None:
        self.outputs = Path(outputs).expanduser().resolve()
        self.device = resolve_device(device)
        self.cache = ModelCache(loader)
        self._trainer_factory = trainer_factory
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[str] = deque()
        self._running: str | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> JobManager:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(target=self._work, name="lucid-jobs", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Cancel queued jobs, stop the running one (it exports) and end the worker."""
        with self._cond:
            self._closing = True
            queued = list(self._queue)
            running = self._running
        for job_id in queued:
            self.cancel(job_id)
        if running is not None:
            self._jobs[running].controls.stop()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    # ------------------------------------------------------------------ submitting and reading

    def submit(self, config: TrainConfig, session: str = "", allow_demo: bool = True) -> JobView:
        """Queue a run of ``config`` for ``session``; returns its first snapshot (state ``queued``)."""
        job_id = uuid.uuid4().hex[:8]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = self.outputs / session_folder(session) / f"{stamp}-{slug(config.prompt.text)}-{job_id}"
        job = _Job(id=job_id, session=session, config=config, allow_demo=allow_demo, run_dir=run_dir,
                   controls=LiveControls(initial_controls(config)))
        with self._cond:
            if self._closing:
                raise JobError("the job manager is shutting down; no new jobs are accepted")
            self._jobs[job_id] = job
            self._queue.append(job_id)
            self._touch(job)
            view = self._view(job)
        logger.info("job %s queued for session %s at position %d: %r", job_id, session or "-", view.position,
                    config.prompt.text)
        return view

    def view(self, job_id: str) -> JobView:
        with self._cond:
            return self._view(self._job(job_id))

    def views(self) -> list[JobView]:
        """Snapshots of every job, oldest first."""
        with self._cond:
            return [self._view(job) for job in self._jobs.values()]

    def latest(self, session: str) -> JobView | None:
        """The newest job of ``session``, or None."""
        with self._cond:
            for job in reversed(list(self._jobs.values())):
                if job.session == session:
                    return self._view(job)
        return None

    def wait(self, job_id: str, after_version: int = -1, timeout_s: float | None = None) -> JobView:
        """The job's next snapshot with a version above ``after_version`` (or the current one on timeout)."""
        with self._cond:
            job = self._job(job_id)
            self._cond.wait_for(lambda: job.version > after_version, timeout_s)
            return self._view(job)

    # ------------------------------------------------------------------ controls

    def set_controls(self, job_id: str, **changes: float | int) -> ControlState:
        """Change live controls (``guidance_scale``, ``delta_t``, ...) of a job; they act from its next step.

        Raises:
            JobError: unknown or finished job. ValueError: unknown control or bad value (from LiveControls).
        """
        job = self._active(job_id)
        state = job.controls.update(**changes)
        with self._cond:
            self._touch(job)
        return state

    def pause(self, job_id: str) -> JobView:
        job = self._active(job_id)
        job.controls.pause()
        with self._cond:
            if job.state == "running":
                job.state = "paused"
            self._touch(job)
            return self._view(job)

    def resume(self, job_id: str) -> JobView:
        job = self._active(job_id)
        job.controls.resume()
        with self._cond:
            if job.state == "paused":
                job.state = "running"
            self._touch(job)
            return self._view(job)

    def stop(self, job_id: str) -> JobView:
        """A running job stops after its current step and exports; a queued one is cancelled."""
        return self.cancel(job_id)

    def cancel(self, job_id: str) -> JobView:
        """Remove a queued job from the queue (state ``cancelled``), or stop a running / paused one."""
        with self._cond:
            job = self._job(job_id)
            if job.id in self._queue:
                self._queue.remove(job.id)
                job.state = "cancelled"
                job.message = "cancelled before it started"
                self._touch_queue()
                self._touch(job)
                logger.info("job %s cancelled while queued", job_id)
            elif job.state in ("running", "paused"):
                job.controls.stop()
                job.message = "stopping after the current step; exporting what exists"
                self._touch(job)
            return self._view(job)

    def cancel_session(self, session: str) -> int:
        """Cancel every queued job of ``session`` and stop its running one; returns how many were affected."""
        with self._cond:
            ids = [j.id for j in self._jobs.values() if j.session == session and j.state not in TERMINAL_STATES]
        for job_id in ids:
            self.cancel(job_id)
        if ids:
            logger.info("session %s closed: %d job(s) cancelled or stopped", session, len(ids))
        return len(ids)

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closing or bool(self._queue))
                if not self._queue:
                    return
                job = self._jobs[self._queue.popleft()]
                self._running = job.id
                job.state = "paused" if job.controls.snapshot().paused else "running"
                self._touch_queue()
                self._touch(job)
            try:
                self._run(job)
            except Exception as err:  # the worker must outlive any one job; the job records why it failed
                logger.exception("job %s failed", job.id)
                self._finish(job, "failed", f"{type(err).__name__}: {err}", outcome="failed")
            finally:
                with self._cond:
                    self._running = None
                    self._touch_queue()

    def _run(self, job: _Job) -> None:
        try:
            prepared = self._prepare(job.config, job.allow_demo)
        except (PriorError, ConfigError, AvatarError, OSError) as err:
            self._finish(job, "failed", str(err), outcome="failed")
            return
        if prepared.config != job.config:
            # The offline demo replaced the request: its own starting controls apply.
            start = initial_controls(prepared.config)
            job.controls.update(guidance_scale=start.guidance_scale, delta_t=start.delta_t,
                                delta_t_start=start.delta_t_start, preview_every=start.preview_every)
        with self._cond:
            job.config, job.notice = prepared.config, prepared.notice
            self._touch(job)
        trainer = self._trainer_factory(prepared.config, prepared.prior, run_dir=job.run_dir,
                                        controls=job.controls, device=self.device)
        trainer.run(lambda event: self._on_event(job, event))

    def _prepare(self, config: TrainConfig, allow_demo: bool) -> PreparedRun:
        """Load the config's prior through the cache, with ``runs.load_run_prior``'s offline-demo fallback; an
        avatar run is checked first (SMPL files, pose, ControlNet) so it fails before any weights load. The trainer
        builds the body from ``config.avatar`` (:func:`lucid_app.avatar.avatar_setup`)."""
        if config.avatar.enabled:
            check_avatar(config)
        return load_run_prior(config, self.device, allow_demo, loader=self.cache.get)

    def _on_event(self, job: _Job, event: Event) -> None:
        if isinstance(event, StepEvent):
            with self._cond:
                job.steps.append(event)
                self._touch(job)
        elif isinstance(event, PreviewEvent):
            grid = tile_views(event.images, PREVIEW_MIN_SIZE_PX)
            with self._cond:
                job.preview, job.preview_step = grid, event.step
                self._touch(job)
        elif isinstance(event, DoneEvent):
            files = {**{k: v for k, v in event.files.items() if k in RUN_FILES}, **run_files(job.run_dir)}
            state: JobState = "failed" if event.status == "failed" else "done"
            message = event.message or f"finished {event.step} steps"
            self._finish(job, state, message, outcome=event.status, files=files)

    def _finish(self, job: _Job, state: JobState, message: str, outcome: str,
                files: dict[str, str] | None = None) -> None:
        with self._cond:
            job.state, job.message, job.outcome = state, message, outcome
            if files is not None:
                job.files = files
            self._touch(job)
        logger.info("job %s %s: %s", job.id, state, message)

    # ------------------------------------------------------------------ internals (hold self._cond)

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobError(f"unknown job {job_id!r}")
        return job

    def _active(self, job_id: str) -> _Job:
        with self._cond:
            job = self._job(job_id)
            if job.state in TERMINAL_STATES:
                raise JobError(f"job {job_id} is {job.state}; controls act on queued or running jobs only")
            return job

    def _touch(self, job: _Job) -> None:
        job.version += 1
        self._cond.notify_all()

    def _touch_queue(self) -> None:
        for job_id in self._queue:
            self._touch(self._jobs[job_id])

    def _view(self, job: _Job) -> JobView:
        position = 0
        if job.id in self._queue:
            position = self._queue.index(job.id) + (1 if self._running is not None else 0)
        return JobView(
            id=job.id, session=job.session, state=job.state, position=position, prompt=job.config.prompt.text,
            total_steps=job.config.optim.steps,
            run_dir=job.run_dir, config_yaml=to_yaml(job.config), notice=job.notice, message=job.message,
            outcome=job.outcome, steps=tuple(job.steps), preview=job.preview, preview_step=job.preview_step,
            files=dict(job.files), controls=job.controls.snapshot(), version=job.version,
        )


# ---------------------------------------------------------------------------------------------- helpers


def tile_views(images: np.ndarray, min_size_px: int = 0) -> np.ndarray:
    """Tile views [V, H, W, 3] into one near-square grid image [rows·H·k, cols·W·k, 3] (white where empty).

    Each view is enlarged by the integer factor k (nearest neighbour) that makes it at least ``min_size_px``
    high, so tiny training renders stay visible in the page.
    """
    k = max(1, -(-min_size_px // images.shape[1]))
    images = images.repeat(k, axis=1).repeat(k, axis=2)
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h, cols * w, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid


__all__ = ["JobError", "JobManager", "JobState", "JobView", "ModelCache", "TERMINAL_STATES", "tile_views"]
