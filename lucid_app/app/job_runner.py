"""One job run to its end on a worker thread: a task in this process, or a training run through the executor.

The :class:`~lucid_app.app.jobs.JobManager`'s worker threads each call :meth:`JobRunner.run` with the job they took from
the queue; the runner drives a training job through the manager's :class:`~lucid_app.app.executors.JobExecutor`
(one interface, whichever executor: in process, a capped worker process, a Ray actor), relays its events into the
job's record on the shared :class:`~lucid_app.app.job_board.JobBoard` (under its ``cond``) and ends the job there.
When training ends (:class:`~lucid_app.train.events.TrainedEvent`) the job turns ``exporting``; once its
``model.ply`` is written the runner hands it to ``on_exporting`` (the manager frees the worker slot: the rest of the
export goes on beside the next job, which may already read that ``model.ply``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from lucid_app.app.executors import JobExecutor, RunError
from lucid_app.app.job_board import TERMINAL_STATES, JobBoard, JobRecord, JobState
from lucid_app.app.model_cache import ModelCache
from lucid_app.app.preview_grid import PREVIEW_MIN_SIZE_PX, tile_views
from lucid_app.app.tasks import Task, TaskContext, TaskStopped
from lucid_app.app.job_host import HostEvent, PriorSamples
from lucid_app.config import to_yaml
from lucid_app.io.run_layout import PLY_NAME, RUN_FILES, run_files
from lucid_app.priors.base import PriorError
from lucid_app.train.budget import JobLimits, JobTooLarge
from lucid_app.train.controls import PromptState
from lucid_app.train.events import DoneEvent, ExportEvent, PreviewEvent, StepEvent, TrainedEvent

logger = logging.getLogger(__name__)


class JobRunner:
    """Runs jobs of one board (see the module docstring).

    Args:
        board: where the jobs' records live. cache: the model cache tasks load priors through. device: where tasks
        run. executor: where training jobs run. limits: the server's per-job limits, checked again on the config
        that actually runs (the offline demo's after a fallback). on_exporting: called with a training job whose
        training ended and whose ``model.ply`` is written (the rest of its export follows).
    """

    def __init__(self, board: JobBoard, cache: ModelCache, device: torch.device, executor: JobExecutor,
                 limits: JobLimits, on_exporting: Callable[[JobRecord], None]) -> None:
        self.board = board
        self.cache = cache
        self.device = device
        self.executor = executor
        self.limits = limits
        self.on_exporting = on_exporting

    def run(self, job: JobRecord) -> None:
        """Run ``job`` to its end; it ends ``done``, ``failed`` or ``cancelled`` on the board (exceptions other than
        the user errors each kind reports propagate: the worker fails the job with them)."""
        if job.task is not None:
            self._run_task(job, job.task)
        else:
            self._run_training(job)

    def _run_training(self, job: JobRecord) -> None:
        """Prepare a training job through the executor, then relay its events here until it ends.

        The config that runs may differ from the request (the offline demo stands in for a missing model; a resumed
        run's own): it is checked against the limits again, and its starting controls replace the job's, except
        those the user changed meanwhile. The controls are forwarded once the trainer exists, then on every change.
        """
        run = self.executor.open(job.config, job.allow_demo, str(job.run_dir), resume=job.resume)
        try:
            start = run.prepare()
            job.controls.replace_defaults(**start.controls)
            with self.board.cond:
                if start.config != job.config:
                    job.config, job.config_yaml = start.config, to_yaml(start.config)
                job.notice = start.notice  # the offline demo's, the doctor's drift warning
                self.board.touch(job)
            self.limits.check(start.config)
            with self.board.cond:
                job.run = run
            job.forward_controls()
            run.train(lambda event: self._on_event(job, event), lambda state: self._mirror_prompt(job, state))
        except (RunError, JobTooLarge) as err:
            self.board.finish(job, "failed", str(err), outcome="failed")
        finally:
            run.release()
            with self.board.cond:
                job.run = None
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

    def _on_event(self, job: JobRecord, event: HostEvent) -> None:
        if isinstance(event, PriorSamples):
            with self.board.cond:  # shown with the step that follows (its StepEvent touches the job)
                job.prior_samples = event.samples
        elif isinstance(event, StepEvent):
            with self.board.cond:
                job.steps.append(event)
                self.board.touch(job)
        elif isinstance(event, PreviewEvent):
            grid = tile_views(event.images, PREVIEW_MIN_SIZE_PX)
            with self.board.cond:
                job.preview, job.preview_step = grid, event.step
                self.board.touch(job)
        elif isinstance(event, TrainedEvent):
            with self.board.cond:
                job.outcome = event.status
                if job.state in ("running", "paused"):
                    job.state, job.detached = "exporting", True
                    job.message = (f"stopped at step {event.step}; exporting in the background"
                                   if event.status == "stopped" else f"training {event.status}; exporting its results")
                self.board.touch(job)
        elif isinstance(event, ExportEvent):
            # Files appear as the export writes them (the splat viewer can show model.ply during the turntable).
            files = run_files(job.run_dir) if event.done == 0 else None
            with self.board.cond:
                job.exporting, job.progress = event.stage, (event.done, event.total)
                if files is not None:
                    job.files = files
                self.board.touch(job)
            if event.stage != PLY_NAME and job.detached:
                self.on_exporting(job)
        elif isinstance(event, DoneEvent):
            files = {**{k: v for k, v in event.files.items() if k in RUN_FILES}, **run_files(job.run_dir)}
            state: JobState = "failed" if event.status == "failed" else "done"
            message = event.message or f"finished {event.step} steps"
            self.board.finish(job, state, message, outcome=event.status, files=files)

