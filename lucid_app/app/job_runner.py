"""One job run to its end on a worker thread: a task, a training run through the executor, or one in this process.

The :class:`~lucid_app.app.jobs.JobManager`'s worker threads each call :meth:`JobRunner.run` with the job they took from
the queue; the runner loads priors through the model cache, builds the trainer, relays its events into the job's
record on the shared :class:`~lucid_app.app.job_board.JobBoard` (under its ``cond``) and ends the job there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import torch

from lucid_app.app.executors import JobExecutor, RunError
from lucid_app.app.job_board import TERMINAL_STATES, JobBoard, JobRecord, JobState
from lucid_app.app.model_cache import ModelCache
from lucid_app.app.preview_grid import PREVIEW_MIN_SIZE_PX, tile_views
from lucid_app.app.tasks import Task, TaskContext, TaskStopped
from lucid_app.avatar import check_avatar
from lucid_app.avatar.body import AvatarError
from lucid_app.bench.quality import CountingPrior
from lucid_app.config import ConfigError, TrainConfig, to_yaml
from lucid_app.io.run_layout import RUN_FILES, run_files
from lucid_app.priors.base import PriorError
from lucid_app.train.controls import PromptState
from lucid_app.train.events import DoneEvent, Event, ExportEvent, PreviewEvent, StepEvent
from lucid_app.train.prepare import PreparedRun, load_run_prior
from lucid_app.train.trainer import initial_controls

logger = logging.getLogger(__name__)


class RunnableTrainer(Protocol):
    def run(self, on_event: Callable[[Event], None] | None = None) -> DoneEvent: ...


TrainerFactory = Callable[..., RunnableTrainer]


class JobRunner:
    """Runs jobs of one board (see the module docstring).

    Args:
        board: where the jobs' records live. cache: the model cache priors load through. device: where they run.
        trainer_factory: ``(config, prior, run_dir=, controls=, device=) → object with .run(on_event)``.
        executor: where training jobs run (None: in this process); task jobs always run here.
    """

    def __init__(self, board: JobBoard, cache: ModelCache, device: torch.device, trainer_factory: TrainerFactory,
                 executor: JobExecutor | None) -> None:
        self.board = board
        self.cache = cache
        self.device = device
        self.trainer_factory = trainer_factory
        self.executor = executor

    def run(self, job: JobRecord) -> None:
        """Run ``job`` to its end; it ends ``done``, ``failed`` or ``cancelled`` on the board (exceptions other than
        the user errors each kind reports propagate: the worker fails the job with them)."""
        if job.task is not None:
            self._run_task(job, job.task)
            return
        if self.executor is not None:
            self._run_remote(job, self.executor)
            return
        self._run_local(job)

    def _run_local(self, job: JobRecord) -> None:
        """Prepare a training job's prior through the cache, then train it on this thread."""
        try:
            prepared = self._prepare(job.config, job.allow_demo)
        except (PriorError, ConfigError, AvatarError, OSError) as err:
            self.board.finish(job, "failed", str(err), outcome="failed")
            return
        config_yaml = job.config_yaml
        if prepared.config != job.config:
            _adopt_start_controls(job, prepared.config)
            config_yaml = to_yaml(prepared.config)
        with self.board.cond:
            job.config, job.config_yaml = prepared.config, config_yaml
            job.notice, job.prior = prepared.notice, prepared.prior
            self.board.touch(job)
        # Counted, so a run's snapshots say how many prior evaluations it cost (the A/B run's table shows them).
        counted = CountingPrior(prepared.prior)
        trainer = self.trainer_factory(prepared.config, counted, run_dir=job.run_dir,
                                       controls=job.controls, device=self.device)
        job.trainer = trainer
        try:
            trainer.run(lambda event: self._on_event(job, event, counted))
        finally:
            job.trainer = None

    def _run_remote(self, job: JobRecord, executor: JobExecutor) -> None:
        """Run a training job through the executor: prepare it there, then relay its events here until it ends.

        As in :meth:`_run_local`, a config the offline demo put in place of the request brings its own starting
        controls (:func:`_adopt_start_controls`); the controls are forwarded once the trainer exists, then on every
        change.
        """
        run = executor.open(job.config, job.allow_demo, str(job.run_dir))
        try:
            config, notice = run.prepare()
            if config != job.config:
                _adopt_start_controls(job, config)
            with self.board.cond:
                job.config, job.notice, job.remote = config, notice, run
                job.config_yaml = to_yaml(config)
                self.board.touch(job)
            job.forward_controls()
            run.train(lambda event: self._on_event(job, event), lambda state: self._mirror_prompt(job, state))
        except RunError as err:
            self.board.finish(job, "failed", str(err), outcome="failed")
        finally:
            run.release()
            with self.board.cond:
                job.remote = None
        with self.board.cond:
            ended = job.state in TERMINAL_STATES
        if not ended:
            self.board.finish(job, "failed", "the run ended without a result; the server log has the details",
                              outcome="failed")

    def _mirror_prompt(self, job: JobRecord, state: PromptState) -> None:
        """Show a remote job's prompt state in force in its snapshots (the UI reads ``controls.prompt``)."""
        job.controls.update_prompt(lambda _: state)
        with self.board.cond:
            self.board.touch(job)

    def _run_task(self, job: JobRecord, task: Task) -> None:
        def progress(done: int, total: int) -> None:
            if job.controls.snapshot().stop:
                raise TaskStopped(f"stopped by the user after {done} of {total}")
            with self.board.cond:
                job.progress = (int(done), int(total))
                self.board.touch(job)

        context = TaskContext(device=self.device, load_prior=lambda model: self.cache.get(model, self.device),
                              folder=job.run_dir, progress=progress)
        try:
            result = task(context)
        except TaskStopped as err:
            self.board.finish(job, "cancelled", str(err), outcome="stopped")
            return
        except (PriorError, ValueError, OSError) as err:
            logger.debug("task %s failed", job.id, exc_info=True)
            self.board.finish(job, "failed", str(err), outcome="failed")
            return
        with self.board.cond:
            job.preview, job.data = result.image, dict(result.data)
        self.board.finish(job, "done", result.message or "finished", outcome="done", files=dict(result.files))

    def _prepare(self, config: TrainConfig, allow_demo: bool) -> PreparedRun:
        """Load the config's prior through the cache, with ``runs.load_run_prior``'s offline-demo fallback; an
        avatar run is checked first (SMPL files, pose, ControlNet) so it fails before any weights load. The trainer
        builds the body from ``config.avatar`` (:func:`lucid_app.avatar.avatar_setup`)."""
        if config.avatar.enabled:
            check_avatar(config)
        return load_run_prior(config, self.device, allow_demo, loader=self.cache.get)

    def _on_event(self, job: JobRecord, event: Event, counted: CountingPrior | None = None) -> None:
        if isinstance(event, StepEvent):
            with self.board.cond:
                job.steps.append(event)
                if counted is not None:
                    job.prior_samples = counted.samples
                self.board.touch(job)
        elif isinstance(event, PreviewEvent):
            grid = tile_views(event.images, PREVIEW_MIN_SIZE_PX)
            with self.board.cond:
                job.preview, job.preview_step = grid, event.step
                self.board.touch(job)
        elif isinstance(event, ExportEvent):
            # Files appear as the export writes them (the splat viewer can show model.ply during the turntable).
            files = run_files(job.run_dir) if event.done == 0 else None
            with self.board.cond:
                job.exporting, job.progress = event.stage, (event.done, event.total)
                if files is not None:
                    job.files = files
                self.board.touch(job)
        elif isinstance(event, DoneEvent):
            files = {**{k: v for k, v in event.files.items() if k in RUN_FILES}, **run_files(job.run_dir)}
            state: JobState = "failed" if event.status == "failed" else "done"
            message = event.message or f"finished {event.step} steps"
            self.board.finish(job, state, message, outcome=event.status, files=files)


def _adopt_start_controls(job: JobRecord, config: TrainConfig) -> None:
    """The offline demo replaced the request: its own starting controls apply, except those the user changed while
    the model was loading."""
    start = initial_controls(config)
    job.controls.replace_defaults(guidance_scale=start.guidance_scale, delta_t=start.delta_t,
                                  delta_t_start=start.delta_t_start, preview_every=start.preview_every)
