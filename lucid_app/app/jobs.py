"""The app's jobs: worker threads take queued jobs, one per slot, and drive them through the executor.

* A FIFO queue; every queued job knows its position (the number of jobs ahead of it, the running one included).
* A model cache (``model_cache.py``), so a prior's weights load once per (model id, device, dtype, model settings);
  it keeps the ``max_cached_models`` most recently used priors (1 by default), so new settings never pile models up
  on the device.
* Job states ``queued → running ⇄ paused → exporting → done | failed``, or ``queued → cancelled``; stopping a
  running job ends it as ``done`` with outcome ``stopped`` after the trainer exported what exists. When training
  ends the job leaves its worker slot (state ``exporting``): its export goes on in the background on its own thread
  (and, with the process executor, its own process) while the next queued job starts; :meth:`JobManager.skip_export`
  ends the export after ``model.ply`` and the checkpoint.
* Training jobs run behind one interface, the executor (``executors.py``): in this process (the default here, and
  for tests), in a worker process with a memory cap (the app's default) or on Ray. The server's per-job limits
  (``train/budget.py``) are checked before a job is queued.
* A run folder with a checkpoint can be continued (:meth:`JobManager.resume_run`), e.g. after a server restart.
* Per-owner run folders: ``OUTPUTS/<session>/<time>-<prompt>-<job id>/`` (the trainer writes them; see
  ``run_folders.py``), where a job's ``session`` is the owner id the app derives on the server
  (:mod:`lucid_app.app.identity`), never a value a client sent.
* Besides training, *task* jobs (:meth:`JobManager.submit_task`, e.g. the pseudo-GT inspector) queue on the same
  worker, so they never run beside training on the device; they report progress and end with a
  :class:`TaskResult` (the task types live in ``tasks.py``). :meth:`JobManager.latest` returns a session's newest
  job of one kind (training by default), so the live controls never land on a task.

Where the rest lives: the jobs' records, their :class:`JobView` snapshots and the board that holds them under one
condition (and so the lock order) in ``job_board.py``; running one job (a task, or a training run through the
executor) in ``job_runner.py``; the model cache, step log, task types and preview tiling in their own modules.
Nothing here starts a thread before :meth:`JobManager.start` (or :meth:`JobManager.warm`, which has the executor
load a model in the background at the app's start-up).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from lucid_app.app.executors import InProcessExecutor, JobExecutor, RunError
from lucid_app.app.job_board import TERMINAL_STATES, TRAIN_KIND, JobBoard, JobRecord, JobView
from lucid_app.app.job_host import TrainerFactory
from lucid_app.app.job_runner import JobRunner
from lucid_app.app.model_cache import ModelCache, PriorLoader
from lucid_app.app.run_folders import JobError, session_folder
from lucid_app.app.tasks import Task
from lucid_app.config import ModelConfig, PromptChange, TrainConfig, from_yaml
from lucid_app.config.devices import resolve_device
from lucid_app.io.run_layout import CONFIG_NAME, slug
from lucid_app.priors import load_prior
from lucid_app.train.budget import JobLimits
from lucid_app.train.controls import ControlState, LiveControls
from lucid_app.train.events import GaussianSnapshot
from lucid_app.train.prepare import demo_stands_in
from lucid_app.train.prompt_changes import check_changes
from lucid_app.train.trainer import Trainer, initial_controls

logger = logging.getLogger(__name__)

WORKER_NAME = "lucid-jobs"
EXPORT_NAME = "lucid-export"


class JobManager:
    """The app's jobs: a FIFO queue, worker threads that own the device, a model cache.

    Args:
        outputs: root folder of all run folders (``OUTPUTS/<session>/<run>/``).
        device: where priors and training run (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        loader: loads a prior (default :func:`lucid_app.priors.load_prior`); tests count its calls.
        trainer_factory: ``(config, prior, run_dir=, controls=, device=) → object with .run(on_event)``.
        max_cached_models: how many loaded priors the model cache keeps (least recently used leaves first); also
            settable later through :attr:`max_cached_models`.
        executor: where training jobs run (``lucid_app.app.executors``): None (default) an
            :class:`InProcessExecutor` over this manager's cache, device and ``trainer_factory``; else its own
            (a worker process, Ray actors). ``executor.slots`` jobs train at once, one worker thread each driving
            its job, the rest queued FIFO. Task jobs always run in this process.
        limits: the server's per-job limits (memory, time), checked before a job is queued (default: none).

    Lock order (``job_board.py``): the board's ``cond`` before a job's controls lock, never the reverse.
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
        limits: JobLimits | None = None,
    ) -> None:
        self.outputs = Path(outputs).expanduser().resolve()
        self.device = resolve_device(device)
        self.cache = ModelCache(loader, max_cached_models)
        self.executor = executor or InProcessExecutor(self.cache, self.device, trainer_factory)
        self.limits = limits or JobLimits(device_type=self.device.type)
        self._board = JobBoard()
        self._runner = JobRunner(self._board, self.cache, self.device, self.executor, self.limits, self._release_slot)
        self._closing = False
        # Worker threads (one per slot) and the threads of jobs exporting in the background.
        self._threads: list[threading.Thread] = []

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
        with self._board.cond:
            if any(thread.is_alive() for thread in self._threads):
                if self._closing:
                    raise JobError("the previous job worker is still finishing its job after close(); start the job "
                                   "manager again once it has ended")
                return self
            self._closing = False
            self._threads = []
            for _ in range(self.executor.slots):
                self._start_worker()
        return self

    def _start_worker(self) -> None:
        """Start one more worker thread (hold cond)."""
        thread = threading.Thread(target=self._work, name=WORKER_NAME, daemon=True)
        self._threads.append(thread)
        thread.start()

    def warm(self, model: ModelConfig) -> threading.Thread | None:
        """Have the executor load ``model`` in the background where jobs run (app start-up: the first job of a cold
        server then finds its prior loaded, or waits for this load instead of starting its own). A model that cannot
        be loaded is logged; the job that asks for it says why. Returns the loading thread when it loads in this
        process (the in-process executor, through this manager's model cache), else None (:meth:`JobExecutor.warm`:
        a worker process loads it in its own cache; Ray's actors, one per job, load their own).
        """
        return self.executor.warm(model)

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Cancel queued jobs, stop the running ones (they export) and end the workers, waiting for exports in the
        background too.

        A worker still busy after ``timeout_s`` (a trainer slow to honour stop) is kept, not forgotten, so that
        :meth:`start` cannot put a second worker beside it on the device.
        """
        with self._board.cond:
            self._closing = True
            # Under the same lock as the flag: the worker cannot pick up a queued job between the two.
            for job_id in list(self._board.queue):
                self.cancel(job_id)
            running = [self._board.jobs[job_id] for job_id in self._board.running]
            for job in running:
                job.controls.stop()
            self._board.cond.notify_all()
            threads = list(self._threads)
        for job in running:
            job.forward_controls()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._board.cond:
            if any(thread.is_alive() for thread in threads):
                logger.warning("the job worker is still running %s s after close(); it ends after its current job",
                               timeout_s)
            else:
                self._threads = [thread for thread in self._threads if thread.is_alive()]

    # ------------------------------------------------------------------ submitting and reading

    def submit(self, config: TrainConfig, session: str = "", allow_demo: bool = True) -> JobView:
        """Queue a run of ``config`` for ``session``; returns its first snapshot (state ``queued``).

        The estimate is checked here, before the job is queued, unless the offline demo will stand in for the
        requested model (:func:`~lucid_app.train.prepare.demo_stands_in`): then the runner checks the demo's config
        once it is known.

        Raises:
            JobTooLarge: the job's estimated memory or time exceeds the server's limits (one line that says which).
        """
        if not demo_stands_in(config, allow_demo):
            self.limits.check(config)
        return self._enqueue(self._record(config, session, config.prompt.text, allow_demo=allow_demo))

    def resume_run(self, run_dir: str | Path, session: str = "") -> JobView:
        """Queue the continuation of the run in ``run_dir`` from its checkpoint (as ``generate --resume``), for
        ``session``; the caller checked that the folder is that session's (``run_folders.resolve_run``).

        Raises:
            JobError: the run is already queued or running here, or its config cannot be read.
            JobTooLarge: the run exceeds the server's limits.
        """
        run_dir = Path(run_dir).resolve()
        try:
            config = from_yaml((run_dir / CONFIG_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise JobError(f"the run {run_dir.name} cannot be resumed: its {CONFIG_NAME} does not load "
                           f"({type(err).__name__})") from None
        with self._board.cond:
            if any(job.run_dir == run_dir and job.state not in TERMINAL_STATES for job in self._board.jobs.values()):
                raise JobError(f"the run {run_dir.name} is already queued or running")
        self.limits.check(config)
        job_id = uuid.uuid4().hex[:8]
        record = JobRecord(id=job_id, session=session, config=config, run_dir=run_dir, allow_demo=False,
                           controls=LiveControls(initial_controls(config)), resume=True)
        return self._enqueue(record)

    def submit_task(self, task: Task, config: TrainConfig, session: str = "", kind: str = "task") -> JobView:
        """Queue ``task`` for ``session`` on the worker, behind the jobs already queued; returns its first snapshot.

        ``config`` is what the task works on (its snapshot shows its prompt); the task loads what it needs
        through its :class:`TaskContext`. Errors it raises as ``PriorError``, ``ValueError`` (``ConfigError``,
        ``JobError``) or ``OSError`` fail the job with their message.
        """
        if kind == TRAIN_KIND:
            raise ValueError(f"submit_task: kind {TRAIN_KIND!r} is reserved for training jobs")
        return self._enqueue(self._record(config, session, kind, allow_demo=False, kind=kind, task=task))

    def _record(self, config: TrainConfig, session: str, name: str, **fields: Any) -> JobRecord:
        """A new job's record, its run folder ``OUTPUTS/<session>/<time>-<name>-<job id>/``."""
        job_id = uuid.uuid4().hex[:8]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = self.outputs / session_folder(session) / f"{stamp}-{slug(name)}-{job_id}"
        return JobRecord(id=job_id, session=session, config=config, run_dir=run_dir,
                         controls=LiveControls(initial_controls(config)), **fields)

    def _enqueue(self, job: JobRecord) -> JobView:
        job_id, session, config = job.id, job.session, job.config
        with self._board.cond:
            if self._closing:
                raise JobError("the job manager is shutting down; no new jobs are accepted")
            self._board.jobs[job_id] = job
            self._board.queue.append(job_id)
            self._board.touch(job)
            view = self._board.view(job)
        logger.info("job %s queued for session %s at position %d: %r", job_id, session or "-", view.position,
                    config.prompt.text)
        return view

    def view(self, job_id: str) -> JobView:
        with self._board.cond:
            return self._board.view(self._board.job(job_id))

    def views(self) -> list[JobView]:
        """Snapshots of every job, oldest first."""
        with self._board.cond:
            return [self._board.view(job) for job in self._board.jobs.values()]

    def latest(self, session: str, kind: str = TRAIN_KIND) -> JobView | None:
        """The newest job of ``session`` of this ``kind`` (training by default), or None."""
        with self._board.cond:
            for job in reversed(list(self._board.jobs.values())):
                if job.session == session and job.kind == kind:
                    return self._board.view(job)
        return None

    def active_run_dirs(self) -> list[Path]:
        """The run folders of the training jobs that are queued, running or exporting here."""
        with self._board.cond:
            return [job.run_dir for job in self._board.jobs.values()
                    if job.task is None and job.state not in TERMINAL_STATES]

    def background_export(self, session: str) -> JobView | None:
        """The newest job of ``session`` that was stopped and exports (or exported) in the background, or None."""
        with self._board.cond:
            for job in reversed(list(self._board.jobs.values())):
                if job.session == session and job.detached and job.outcome == "stopped":
                    return self._board.view(job)
        return None

    def wait(self, job_id: str, after_version: int = -1, timeout_s: float | None = None) -> JobView:
        """The job's next snapshot with a version above ``after_version`` (or the current one on timeout)."""
        with self._board.cond:
            job = self._board.job(job_id)
            self._board.cond.wait_for(lambda: job.version > after_version, timeout_s)
            return self._board.view(job)

    # ------------------------------------------------------------------ controls

    def set_controls(self, job_id: str, **changes: float | int) -> ControlState:
        """Change live controls (``guidance_scale``, ``delta_t``, ...) of a job; they act from its next step.

        Raises:
            JobError: unknown or finished job. ValueError: unknown control or bad value (from LiveControls).
        """
        with self._board.cond:  # checked and changed under one lock: a job that just ended is refused, not changed
            job = self._board.active(job_id)
            state = job.controls.update(**changes)
            self._board.touch(job)
        job.forward_controls()
        return state

    def set_prompt(self, job_id: str, **changes: object) -> PromptChange:
        """Change the negative prompt, view-prompt suffixes or Perp-Neg settings of a running job.

        Valid names: ``negative`` (text or ``"@NAME"`` of the negative-prompt library), ``front_suffix``,
        ``side_suffix``, ``back_suffix``, ``perp_neg``, ``perp_neg_weight``, ``front_decay``, ``side_decay``
        (None = unchanged). The new prompts are encoded where the job runs, with its prior (``JobRun.change_prompt``,
        in the caller's thread while the trainer goes on), then swapped into the run's live controls at once; the
        trainer uses them from its next step, logs the change in ``metrics.jsonl`` and records it in the run's
        ``config.yaml``.

        Returns:
            The change (negative resolved to text), its ``step`` the first step that uses it.

        Raises:
            JobError: unknown or finished job, or one that has not started training yet (its model is loading).
            ValueError: an unknown name (the message lists the valid ones) or a bad value, or the job refused it.
            ConfigError: an ``@NAME`` that is not in the negative-prompt library.
        """
        job = self._board.active(job_id)
        if job.task is not None:
            raise JobError(f"job {job_id} is a {job.kind} job, not a training run: it has no prompts to change")
        checked = check_changes(**changes)
        with self._board.cond:
            state, run = job.state, job.run
        if state == "exporting":
            raise JobError(f"job {job_id} has ended its training and is exporting; prompt changes act on a running job")
        if run is None:
            raise JobError(f"job {job_id} has not started training yet (its model is still loading); prompt changes "
                           "act on a running job: try again in a moment")
        change, state = run.change_prompt(checked)
        job.controls.update_prompt(lambda _: state)
        with self._board.cond:
            self._board.touch(job)
        return change

    def live_gaussians(self, job_id: str, timeout_s: float = 60.0) -> GaussianSnapshot:
        """A copy of a running training job's Gaussians, taken between two of its steps (beside training: the
        caller waits at most one step, not for the run to end), through the job's run (``Trainer.request_snapshot``
        where it runs, whichever executor).

        Raises:
            JobError: unknown job, not a training job, not training yet (queued, loading its model) or finished, or
                no snapshot within ``timeout_s``.
        """
        with self._board.cond:
            job = self._board.job(job_id)
            run = job.run if job.task is None and job.state in ("running", "paused") else None
            if run is None:
                raise JobError(f"job {job_id} is not training right now ({job.state}); inspect a finished run from "
                               "its folder instead")
        try:
            return run.snapshot(timeout_s)
        except RunError as err:
            raise JobError(f"job {job_id}: {err}") from None

    def pause(self, job_id: str) -> JobView:
        return self._set_paused(job_id, True)

    def resume(self, job_id: str) -> JobView:
        return self._set_paused(job_id, False)

    def _set_paused(self, job_id: str, paused: bool) -> JobView:
        """Pause or resume a job's trainer; a running job shows ``paused`` and back (a queued one keeps its state).

        The controls and the job's state change under one lock, the state read back from the controls: with two
        steps a concurrent pause and resume could interleave into a job shown ``paused`` whose trainer runs.
        """
        with self._board.cond:
            job = self._board.active(job_id)
            if paused:
                job.controls.pause()
            else:
                job.controls.resume()
            if job.state in ("running", "paused"):
                job.state = "paused" if job.controls.snapshot().paused else "running"
            self._board.touch(job)
            view = self._board.view(job)
        job.forward_controls()
        return view

    def cancel(self, job_id: str) -> JobView:
        """Remove a queued job from the queue (state ``cancelled``), or stop a running / paused one (it stops after its
        current step and exports what exists)."""
        with self._board.cond:
            job = self._board.job(job_id)
            if job.id in self._board.queue:
                self._board.queue.remove(job.id)
                job.state = "cancelled"
                job.message = "cancelled before it started"
                self._board.touch_queue()
                self._board.touch(job)
                logger.info("job %s cancelled while queued", job_id)
            elif job.state in ("running", "paused"):
                job.controls.stop()
                job.message = "stopping after the current step; exporting what exists"
                self._board.touch(job)
            view = self._board.view(job)
        job.forward_controls()
        return view

    def skip_export(self, job_id: str) -> JobView:
        """End a training job's export after ``model.ply`` and the checkpoint (no turntable, views or mesh); a job
        still training is stopped first. Nothing happens to a job that is queued or has ended.

        Raises:
            JobError: unknown job, or a task job.
        """
        with self._board.cond:
            job = self._board.job(job_id)
            if job.task is not None:
                raise JobError(f"job {job_id} is a {job.kind} job: it has no export to skip")
            if job.state in ("running", "paused", "exporting"):
                job.controls.skip_export()
                job.message = "skipping the export: model.ply and the checkpoint are kept"
                self._board.touch(job)
            view = self._board.view(job)
        job.forward_controls()
        return view

    def cancel_session(self, session: str) -> int:
        """Cancel every queued job of ``session`` and stop its running one; returns how many were affected."""
        with self._board.cond:
            ids = [j.id for j in self._board.jobs.values() if j.session == session and j.state not in TERMINAL_STATES]
        for job_id in ids:
            self.cancel(job_id)
        if ids:
            logger.info("session %s closed: %d job(s) cancelled or stopped", session, len(ids))
        return len(ids)

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        while True:
            with self._board.cond:
                self._board.cond.wait_for(lambda: self._closing or bool(self._board.queue))
                if not self._board.queue:
                    return
                job = self._board.jobs[self._board.queue.popleft()]
                self._board.running.add(job.id)
                job.state = "paused" if job.controls.snapshot().paused else "running"
                self._board.touch_queue()
                self._board.touch(job)
            try:
                self._runner.run(job)
            except Exception as err:  # the worker must outlive any one job; the job records why it failed
                logger.exception("job %s failed", job.id)
                # The exception's text may hold server paths and internals: it goes to the log only.
                self._board.finish(job, "failed", f"internal error ({type(err).__name__}); the server log has the "
                                                  f"details under job {job.id}", outcome="failed")
            finally:
                with self._board.cond:
                    self._board.running.discard(job.id)
                    self._board.touch_queue()
            if threading.current_thread().name == EXPORT_NAME:
                return  # a new worker took this thread's slot when the job's training ended (_release_slot)

    def _release_slot(self, job: JobRecord) -> None:
        """A job's training ended and its ``model.ply`` is written (on its worker thread, at every later export
        stage): the job leaves its slot to a new worker, so the next queued job starts while this thread drives the
        rest of the export to its end."""
        with self._board.cond:
            worker = threading.current_thread()
            if worker.name != WORKER_NAME:
                return  # released at an earlier stage
            worker.name = EXPORT_NAME
            self._board.running.discard(job.id)
            self._board.touch_queue()
            if not self._closing:
                self._start_worker()
