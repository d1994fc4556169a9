"""In-process training jobs for the app: one worker thread owns the device and runs one job at a time.

* A FIFO queue; every queued job knows its position (the number of jobs ahead of it, the running one included).
* A model cache (``model_cache.py``), so a prior's weights load once per (model id, device, dtype, model settings);
  it keeps the ``max_cached_models`` most recently used priors (1 by default), so new settings never pile models up
  on the device.
* Job states ``queued → running ⇄ paused → done | failed``, or ``queued → cancelled``; stopping a running job
  ends it as ``done`` with outcome ``stopped`` after the trainer exported what exists.
* Per-session run folders: ``OUTPUTS/<session>/<time>-<prompt>-<job id>/`` (the trainer writes them; see
  ``run_folders.py``).
* Besides training, *task* jobs (:meth:`JobManager.submit_task`, e.g. the pseudo-GT inspector) queue on the same
  worker, so they never run beside training on the device; they report progress and end with a
  :class:`TaskResult` (the task types live in ``tasks.py``). :meth:`JobManager.latest` returns a session's newest job of one kind (training by default),
  so the live controls never land on a task.

Readers (the UI's handlers, tests) never touch a job's mutable state: they get immutable :class:`JobView`
snapshots, and :meth:`JobManager.wait` returns the next one when the job changes. A snapshot is O(1) to take (every
client's stream refreshes several times a second, under the lock the worker takes every step): the config's YAML is
rendered once when the config is set, and the steps are a view of the first n entries of an append-only log
(``step_log.py``); the preview is tiled once per preview event (``preview_grid.py``).
Nothing here starts a thread before :meth:`JobManager.start`.

Why this module is over ~400 lines: what is left is one job, :class:`JobManager` (about 500 of its lines) with
its snapshot type. Its queue, worker threads, live controls and executor relay all share one condition
(``self._cond``) and one lock order, so they stay in one class where that discipline can be read in one place. This
module re-exports the names other modules and tests import from it (model cache, step log, task types,
``tile_views``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from lucid_app.avatar import check_avatar
from lucid_app.avatar.body import AvatarError
from lucid_app.config import ConfigError, PromptChange, TrainConfig, to_yaml
from lucid_app.controls import ControlState, LiveControls, PromptState
from lucid_app.devices import resolve_device
from lucid_app.events import DoneEvent, Event, ExportEvent, GaussianSnapshot, PreviewEvent, StepEvent
from lucid_app.executors import JobExecutor, RemoteRun, RunError
from lucid_app.priors import load_prior
from lucid_app.model_cache import ModelCache, PriorLoader
from lucid_app.preview_grid import PREVIEW_MIN_SIZE_PX, tile_views
from lucid_app.priors.base import DiffusionPrior, PriorError
from lucid_app.prompt_changes import check_changes, request_change
from lucid_app.runs import PreparedRun, load_run_prior
from lucid_app.run_folders import JobError, RUN_FILES, run_files, session_folder, slug
from lucid_app.step_log import StepLog, StepsView
from lucid_app.tasks import Task, TaskContext, TaskResult, TaskStopped
from lucid_app.trainer import Trainer, initial_controls

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "paused", "done", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})


class RunnableTrainer(Protocol):
    def run(self, on_event: Callable[[Event], None] | None = None) -> DoneEvent: ...


TrainerFactory = Callable[..., RunnableTrainer]
TRAIN_KIND = "train"


@dataclass(frozen=True)
class JobView:
    """An immutable snapshot of one job, safe to hand to another thread.

    Attributes:
        position: jobs ahead of this one (the running one included) while queued; 0 otherwise.
        config_yaml: the resolved config (after a fallback to the offline demo, the demo's), rendered once.
        notice: set when the offline demo replaced the requested model.
        outcome: the trainer's end status (``done``, ``stopped``, ``failed``), empty before the end.
        steps: every StepEvent so far (for plots), a read-only sequence (:class:`StepsView`; tests may pass a
            tuple); preview: the latest preview views tiled, [H, W, 3] uint8.
        files: output name (``ply``, ``video``, ``config``, ``mesh``, ``metrics``) → path, once they exist.
        version: increases with every change of the job.
        kind: ``"train"``, or the kind given to :meth:`JobManager.submit_task` (then ``preview`` is the task's image).
        progress: a task's (done, total) units of work (a training job's: the export stage's); data: a task's
            result data once it is done.
        exporting: the export stage a finished training run is in (``model.ply``, ``turntable``, ``mesh``), "" else.
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
    steps: Sequence[StepEvent]
    preview: np.ndarray | None
    preview_step: int
    files: dict[str, str]
    controls: ControlState
    version: int
    kind: str = TRAIN_KIND
    progress: tuple[int, int] = (0, 0)
    data: dict[str, Any] = field(default_factory=dict)
    exporting: str = ""

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
    steps: StepLog = field(default_factory=StepLog)
    preview: np.ndarray | None = None
    preview_step: int = 0
    files: dict[str, str] = field(default_factory=dict)
    version: int = 0
    kind: str = TRAIN_KIND
    task: Task | None = None
    progress: tuple[int, int] = (0, 0)
    data: dict[str, Any] = field(default_factory=dict)
    # The training run's prior while it runs (live prompt changes are encoded with it); dropped when the job ends,
    # so a prior the model cache evicted does not stay on the device.
    prior: DiffusionPrior | None = None
    # The job's handle while an executor runs it elsewhere (controls and prompt changes are forwarded to it).
    remote: RemoteRun | None = None
    # The in-process trainer while it runs (for snapshots of its live Gaussians), and the export stage at the end.
    trainer: Any = None
    exporting: str = ""
    # to_yaml(config), rendered whenever config is set (here, and in JobManager._run), never per snapshot.
    config_yaml: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.config_yaml = to_yaml(self.config)


class JobManager:
    """The app's jobs: a FIFO queue, one worker thread that owns the device, a model cache.

    Args:
        outputs: root folder of all run folders (``OUTPUTS/<session>/<run>/``).
        device: where priors and training run (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        loader: loads a prior (default :func:`lucid_app.priors.load_prior`); tests count its calls.
        trainer_factory: ``(config, prior, run_dir=, controls=, device=) → object with .run(on_event)``.
        max_cached_models: how many loaded priors the model cache keeps (least recently used leaves first); also
            settable later through :attr:`max_cached_models`.
        executor: where training jobs run (``lucid_app.executors``): None (default) in this process, one job at a time
            on the worker thread; else ``executor.slots`` jobs at once on it (e.g. Ray actors), one worker thread
            each driving its job, the rest queued FIFO. Task jobs always run in this process.

    Lock order: ``self._cond`` before a job's controls lock, never the reverse.
    """

    def __init__(
        self,
        outputs: str | Path,
        device: str | torch.device = "auto",
        *,
        loader: PriorLoader = load_prior,
        trainer_factory: TrainerFactory = Trainer,
        max_cached_models: int = 1,
        executor: JobExecutor | None = None,
    ) -> None:
        self.outputs = Path(outputs).expanduser().resolve()
        self.device = resolve_device(device)
        self.cache = ModelCache(loader, max_cached_models)
        self._trainer_factory = trainer_factory
        self.executor = executor
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[str] = deque()
        self._running: set[str] = set()
        self._cond = threading.Condition()
        self._closing = False
        self._threads: list[threading.Thread] = []
        # Serialises the encoding of live prompt changes (a fast tokenizer must not run in two threads at once).
        self._encode_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def max_cached_models(self) -> int:
        """How many loaded priors the model cache keeps; lowering it unloads the least recently used at once."""
        return self.cache.max_models

    @max_cached_models.setter
    def max_cached_models(self, value: int) -> None:
        self.cache.max_models = value

    def start(self) -> JobManager:
        """Start the worker thread (idempotent while it runs).

        Raises:
            JobError: an earlier :meth:`close` timed out and its worker is still finishing a job: a second worker
                would train beside it on the same device, so none starts until the old one has ended.
        """
        with self._cond:
            if any(thread.is_alive() for thread in self._threads):
                if self._closing:
                    raise JobError("the previous job worker is still finishing its job after close(); start the job "
                                   "manager again once it has ended")
                return self
            self._closing = False
            slots = self.executor.slots if self.executor is not None else 1
            self._threads = [threading.Thread(target=self._work, name="lucid-jobs", daemon=True)
                             for _ in range(slots)]
            for thread in self._threads:
                thread.start()
        return self

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Cancel queued jobs, stop the running one (it exports) and end the worker.

        A worker still busy after ``timeout_s`` (a trainer slow to honour stop) is kept, not forgotten, so that
        :meth:`start` cannot put a second worker beside it on the device.
        """
        with self._cond:
            self._closing = True
            # Under the same lock as the flag: the worker cannot pick up a queued job between the two.
            for job_id in list(self._queue):
                self.cancel(job_id)
            running = [self._jobs[job_id] for job_id in self._running]
            for job in running:
                job.controls.stop()
            self._cond.notify_all()
            threads = self._threads
        for job in running:
            self._forward(job)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._cond:
            if any(thread.is_alive() for thread in threads):
                logger.warning("the job worker is still running %s s after close(); it ends after its current job",
                               timeout_s)
            elif self._threads is threads:
                self._threads = []

    # ------------------------------------------------------------------ submitting and reading

    def submit(self, config: TrainConfig, session: str = "", allow_demo: bool = True) -> JobView:
        """Queue a run of ``config`` for ``session``; returns its first snapshot (state ``queued``)."""
        job_id = uuid.uuid4().hex[:8]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = self.outputs / session_folder(session) / f"{stamp}-{slug(config.prompt.text)}-{job_id}"
        job = _Job(id=job_id, session=session, config=config, allow_demo=allow_demo, run_dir=run_dir,
                   controls=LiveControls(initial_controls(config)))
        return self._enqueue(job)

    def submit_task(self, task: Task, config: TrainConfig, session: str = "", kind: str = "task") -> JobView:
        """Queue ``task`` for ``session`` on the worker, behind the jobs already queued; returns its first snapshot.

        ``config`` is what the task works on (its snapshot shows its prompt); the task loads what it needs
        through its :class:`TaskContext`. Errors it raises as ``PriorError``, ``ValueError`` (``ConfigError``,
        ``JobError``) or ``OSError`` fail the job with their message.
        """
        if kind == TRAIN_KIND:
            raise ValueError(f"submit_task: kind {TRAIN_KIND!r} is reserved for training jobs")
        job_id = uuid.uuid4().hex[:8]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = self.outputs / session_folder(session) / f"{stamp}-{slug(kind)}-{job_id}"
        job = _Job(id=job_id, session=session, config=config, allow_demo=False, run_dir=run_dir,
                   controls=LiveControls(initial_controls(config)), kind=kind, task=task)
        return self._enqueue(job)

    def _enqueue(self, job: _Job) -> JobView:
        job_id, session, config = job.id, job.session, job.config
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

    def latest(self, session: str, kind: str = TRAIN_KIND) -> JobView | None:
        """The newest job of ``session`` of this ``kind`` (training by default), or None."""
        with self._cond:
            for job in reversed(list(self._jobs.values())):
                if job.session == session and job.kind == kind:
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
        with self._cond:  # checked and changed under one lock: a job that just ended is refused, not changed
            job = self._active(job_id)
            state = job.controls.update(**changes)
            self._touch(job)
        self._forward(job)
        return state

    def set_prompt(self, job_id: str, **changes: object) -> PromptChange:
        """Change the negative prompt, view-prompt suffixes or Perp-Neg settings of a running job.

        Valid names: ``negative`` (text or ``"@NAME"`` of the negative-prompt library), ``front_suffix``,
        ``side_suffix``, ``back_suffix``, ``perp_neg``, ``perp_neg_weight``, ``front_decay``, ``side_decay``
        (None = unchanged). The new prompts are encoded here, in the caller's thread, with the job's prior, then
        swapped into the job's live controls at once; the trainer uses them from its next step, logs the change in
        ``metrics.jsonl`` and records it in the run's ``config.yaml``.

        Returns:
            The change (negative resolved to text), its ``step`` the first step that uses it.

        Raises:
            JobError: unknown or finished job, or one that has not started training yet (its model is loading).
            ValueError: an unknown name (the message lists the valid ones) or a bad value.
            ConfigError: an ``@NAME`` that is not in the negative-prompt library.
        """
        job = self._active(job_id)
        if job.task is not None:
            raise JobError(f"job {job_id} is a {job.kind} job, not a training run: it has no prompts to change")
        checked = check_changes(**changes)
        with self._cond:
            prior, remote = job.prior, job.remote
        if remote is not None:
            change, state = remote.change_prompt(checked)
            job.controls.update_prompt(lambda _: state)
            with self._cond:
                self._touch(job)
            return change
        if prior is None or job.controls.snapshot().prompt is None:
            raise JobError(f"job {job_id} has not started training yet (its model is still loading); prompt changes "
                           "act on a running job: try again in a moment")
        with self._encode_lock:
            change = request_change(job.controls, prior, checked)
        with self._cond:
            self._touch(job)
        return change

    def live_gaussians(self, job_id: str, timeout_s: float = 60.0) -> GaussianSnapshot:
        """A copy of a running training job's Gaussians, taken between two of its steps (beside training: the
        caller waits at most one step, not for the run to end). Goes through the trainer the job holds
        (``Trainer.request_snapshot``); an executor's remote run would answer through its trainer the same way.

        Raises:
            JobError: unknown job, not a training job, not training yet (queued, loading its model) or finished, or
                no snapshot within ``timeout_s``.
        """
        with self._cond:
            job = self._job(job_id)
            trainer, remote = job.trainer, job.remote
            if job.task is not None or job.state not in ("running", "paused") or (trainer is None and remote is None):
                raise JobError(f"job {job_id} is not training right now ({job.state}); inspect a finished run from "
                               "its folder instead")
        if remote is not None:
            try:
                return remote.snapshot(timeout_s)
            except RunError as err:
                raise JobError(f"job {job_id}: {err}") from None
        try:
            return trainer.request_snapshot().result(timeout=timeout_s)
        except TimeoutError:
            raise JobError(f"job {job_id} did not reach a step boundary within {timeout_s:g} s") from None

    def pause(self, job_id: str) -> JobView:
        return self._set_paused(job_id, True)

    def resume(self, job_id: str) -> JobView:
        return self._set_paused(job_id, False)

    def _set_paused(self, job_id: str, paused: bool) -> JobView:
        """Pause or resume a job's trainer; a running job shows ``paused`` and back (a queued one keeps its state).

        The controls and the job's state change under one lock, the state read back from the controls: with two
        steps a concurrent pause and resume could interleave into a job shown ``paused`` whose trainer runs.
        """
        with self._cond:
            job = self._active(job_id)
            if paused:
                job.controls.pause()
            else:
                job.controls.resume()
            if job.state in ("running", "paused"):
                job.state = "paused" if job.controls.snapshot().paused else "running"
            self._touch(job)
            view = self._view(job)
        self._forward(job)
        return view

    def cancel(self, job_id: str) -> JobView:
        """Remove a queued job from the queue (state ``cancelled``), or stop a running / paused one (it stops after its
        current step and exports what exists)."""
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
            view = self._view(job)
        self._forward(job)
        return view

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
                self._running.add(job.id)
                job.state = "paused" if job.controls.snapshot().paused else "running"
                self._touch_queue()
                self._touch(job)
            try:
                self._run(job)
            except Exception as err:  # the worker must outlive any one job; the job records why it failed
                logger.exception("job %s failed", job.id)
                # The exception's text may hold server paths and internals: it goes to the log only.
                self._finish(job, "failed", f"internal error ({type(err).__name__}); the server log has the details "
                                            f"under job {job.id}", outcome="failed")
            finally:
                with self._cond:
                    self._running.discard(job.id)
                    self._touch_queue()

    def _run(self, job: _Job) -> None:
        if job.task is not None:
            self._run_task(job, job.task)
            return
        if self.executor is not None:
            self._run_remote(job, self.executor)
            return
        try:
            prepared = self._prepare(job.config, job.allow_demo)
        except (PriorError, ConfigError, AvatarError, OSError) as err:
            self._finish(job, "failed", str(err), outcome="failed")
            return
        config_yaml = job.config_yaml
        if prepared.config != job.config:
            # The offline demo replaced the request: its own starting controls apply, except those the user changed
            # while the model was loading.
            start = initial_controls(prepared.config)
            job.controls.replace_defaults(guidance_scale=start.guidance_scale, delta_t=start.delta_t,
                                          delta_t_start=start.delta_t_start, preview_every=start.preview_every)
            config_yaml = to_yaml(prepared.config)
        with self._cond:
            job.config, job.config_yaml = prepared.config, config_yaml
            job.notice, job.prior = prepared.notice, prepared.prior
            self._touch(job)
        trainer = self._trainer_factory(prepared.config, prepared.prior, run_dir=job.run_dir,
                                        controls=job.controls, device=self.device)
        job.trainer = trainer
        try:
            trainer.run(lambda event: self._on_event(job, event))
        finally:
            job.trainer = None

    def _run_remote(self, job: _Job, executor: JobExecutor) -> None:
        """Run a training job through the executor: prepare it there, then relay its events here until it ends.

        As in :meth:`_run`, a config the offline demo replaced brings its own starting controls, except those the
        user changed meanwhile; the controls are forwarded once the trainer exists, then on every change.
        """
        run = executor.open(job.config, job.allow_demo, str(job.run_dir))
        try:
            config, notice = run.prepare()
            if config != job.config:
                start = initial_controls(config)
                job.controls.replace_defaults(guidance_scale=start.guidance_scale, delta_t=start.delta_t,
                                              delta_t_start=start.delta_t_start, preview_every=start.preview_every)
            with self._cond:
                job.config, job.notice, job.remote = config, notice, run
                job.config_yaml = to_yaml(config)
                self._touch(job)
            self._forward(job)
            run.train(lambda event: self._on_event(job, event), lambda state: self._mirror_prompt(job, state))
        except RunError as err:
            self._finish(job, "failed", str(err), outcome="failed")
        finally:
            run.release()
            with self._cond:
                job.remote = None
        with self._cond:
            ended = job.state in TERMINAL_STATES
        if not ended:
            self._finish(job, "failed", "the run ended without a result; the server log has the details",
                         outcome="failed")

    def _mirror_prompt(self, job: _Job, state: PromptState) -> None:
        """Show a remote job's prompt state in force in its snapshots (the UI reads ``controls.prompt``)."""
        job.controls.update_prompt(lambda _: state)
        with self._cond:
            self._touch(job)

    def _forward(self, job: _Job) -> None:
        """Send a remotely running job its current controls (call without holding ``self._cond``)."""
        remote = job.remote
        if remote is not None:
            remote.sync(job.controls.snapshot())

    def _run_task(self, job: _Job, task: Task) -> None:
        def progress(done: int, total: int) -> None:
            if job.controls.snapshot().stop:
                raise TaskStopped(f"stopped by the user after {done} of {total}")
            with self._cond:
                job.progress = (int(done), int(total))
                self._touch(job)

        context = TaskContext(device=self.device, load_prior=lambda model: self.cache.get(model, self.device),
                              folder=job.run_dir, progress=progress)
        try:
            result = task(context)
        except TaskStopped as err:
            self._finish(job, "cancelled", str(err), outcome="stopped")
            return
        except (PriorError, ValueError, OSError) as err:
            logger.debug("task %s failed", job.id, exc_info=True)
            self._finish(job, "failed", str(err), outcome="failed")
            return
        with self._cond:
            job.preview, job.data = result.image, dict(result.data)
        self._finish(job, "done", result.message or "finished", outcome="done", files=dict(result.files))

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
        elif isinstance(event, ExportEvent):
            # Files appear as the export writes them (the splat viewer can show model.ply during the turntable).
            files = run_files(job.run_dir) if event.done == 0 else None
            with self._cond:
                job.exporting, job.progress = event.stage, (event.done, event.total)
                if files is not None:
                    job.files = files
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
            job.exporting = ""
            job.prior = None  # no prompt changes after the end; an evicted prior's memory can return
            job.remote = None
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
            position = self._queue.index(job.id) + len(self._running)
        return JobView(
            id=job.id, session=job.session, state=job.state, position=position, prompt=job.config.prompt.text,
            total_steps=job.config.optim.steps,
            run_dir=job.run_dir, config_yaml=job.config_yaml, notice=job.notice, message=job.message,
            outcome=job.outcome, steps=job.steps.view(), preview=job.preview, preview_step=job.preview_step,
            files=dict(job.files), controls=job.controls.snapshot(), version=job.version,
            kind=job.kind, progress=job.progress, data=dict(job.data), exporting=job.exporting,
        )


__all__ = ["JobError", "JobManager", "JobState", "JobView", "ModelCache", "StepLog", "StepsView", "TERMINAL_STATES",
           "TRAIN_KIND", "Task", "TaskContext", "TaskResult", "TaskStopped", "tile_views"]
