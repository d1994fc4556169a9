"""The app's jobs as data: each job's record, its immutable snapshot, and the board that holds them all.

:class:`JobBoard` holds every job, the FIFO queue and the running set under one condition (``cond``);
:class:`~lucid_app.app.jobs.JobManager` (the public API) and :class:`~lucid_app.app.job_runner.JobRunner` (which runs
one job on a worker thread) share one board, so the lock discipline lives here. Lock order: ``cond`` before a job's
controls lock, never the reverse. Readers never touch a job's mutable record: they get :class:`JobView` snapshots, O(1)
to take (the config's YAML is rendered once when the config is set; the steps are a view of an append-only log).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lucid_app.app.executors import JobRun
from lucid_app.app.run_folders import JobError
from lucid_app.app.step_log import StepLog
from lucid_app.app.tasks import Task
from lucid_app.config import TrainConfig, to_yaml
from lucid_app.train.controls import ControlState, LiveControls
from lucid_app.train.events import StepEvent

logger = logging.getLogger(__name__)

# ``exporting``: a training job whose training ended and whose end export goes on without a worker slot (the next job
# runs meanwhile); it ends ``done`` or ``failed`` like the others.
JobState = Literal["queued", "running", "paused", "exporting", "done", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})
TRAIN_KIND = "train"


@dataclass(frozen=True)
class JobView:
    """An immutable snapshot of one job, safe to hand to another thread.

    Attributes:
        position: jobs ahead of this one (the running one included) while queued; 0 otherwise.
        config_yaml: the resolved config (after a fallback to the offline demo, the demo's), rendered once.
        notice: set when the offline demo replaced the requested model.
        outcome: the trainer's end status (``done``, ``stopped``, ``failed``), empty before training ends (set when
            it ends: an ``exporting`` job has one).
        steps: every StepEvent so far (for plots), a read-only sequence (:class:`StepsView`; tests may pass a
            tuple); preview: the latest preview views tiled, [H, W, 3] uint8.
        files: output name (``ply``, ``video``, ``config``, ``mesh``, ``metrics``) → path, once they exist.
        version: increases with every change of the job.
        kind: ``"train"``, or the kind given to :meth:`JobManager.submit_task` (then ``preview`` is the task's image).
        progress: a task's (done, total) units of work (a training job's: the export stage's); data: a task's
            result data once it is done.
        exporting: the export stage a training run is in (``model.ply``, ``turntable``, ``mesh``), "" else.
        resumed: the job continues an earlier run from its checkpoint (its steps start after the checkpoint's).
        detached: the job left its worker slot when its training ended (state ``exporting`` then ``done`` or
            ``failed``): its export went on in the background.
        prior_samples: the prior evaluations of a training run so far, in samples (one view at one timestep and
            prompt = 1; counted where the run trains, whichever executor); 0 for a task (for a resumed run: those
            since it resumed).
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
    resumed: bool = False
    detached: bool = False
    prior_samples: int = 0

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def training(self) -> bool:
        """The job holds a worker slot: it is running or paused (an ``exporting`` job no longer does)."""
        return self.state in ("running", "paused")

    @property
    def last_step(self) -> StepEvent | None:
        return self.steps[-1] if self.steps else None


@dataclass
class JobRecord:
    """One job's mutable state; only the worker running it and the :class:`JobBoard`'s holders (under ``cond``)
    change it."""

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
    # A training job continued from its run folder's checkpoint.
    resume: bool = False
    # The job's handle while its executor runs it (controls, prompt changes and snapshot requests go through it).
    run: JobRun | None = None
    # The export stage at the end, and whether the job left its worker slot for it.
    exporting: str = ""
    detached: bool = False
    # The prior evaluations so far (the A/B run's table shows them).
    prior_samples: int = 0
    # to_yaml(config), rendered whenever config is set (here, and in JobRunner when a run is prepared), never per
    # snapshot.
    config_yaml: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.config_yaml = to_yaml(self.config)

    def forward_controls(self) -> None:
        """Send a running job its current controls (call without holding the board's ``cond``)."""
        run = self.run
        if run is not None:
            run.sync(self.controls.snapshot())



class JobBoard:
    """Every job by id (oldest first), the FIFO queue of queued ids and the ids running, under one condition.

    Methods marked *hold cond* expect the caller to hold :attr:`cond`; the others take it themselves.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jobs: dict[str, JobRecord] = {}
        self.queue: deque[str] = deque()
        self.running: set[str] = set()

    def finish(self, job: JobRecord, state: JobState, message: str, outcome: str,
               files: dict[str, str] | None = None) -> None:
        """End a job: its final state, message and outcome (and files); it drops its run handle."""
        with self.cond:
            job.state, job.message, job.outcome = state, message, outcome
            job.exporting = ""
            job.run = None  # no controls after the end; the executor frees the worker
            if files is not None:
                job.files = files
            self.touch(job)
        logger.info("job %s %s: %s", job.id, state, message)

    def job(self, job_id: str) -> JobRecord:
        """The job of ``job_id`` (hold cond).

        Raises:
            JobError: no such job.
        """
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(f"unknown job {job_id!r}")
        return job

    def active(self, job_id: str) -> JobRecord:
        """The job of ``job_id`` while it is queued, running, paused or exporting.

        Raises:
            JobError: no such job, or it has ended.
        """
        with self.cond:
            job = self.job(job_id)
            if job.state in TERMINAL_STATES:
                raise JobError(f"job {job_id} is {job.state}; controls act on queued or running jobs only")
            return job

    def touch(self, job: JobRecord) -> None:
        """Mark a change of ``job`` (a new version) and wake its waiters (hold cond)."""
        job.version += 1
        self.cond.notify_all()

    def touch_queue(self) -> None:
        """Touch every queued job: their positions changed (hold cond)."""
        for job_id in self.queue:
            self.touch(self.jobs[job_id])

    def view(self, job: JobRecord) -> JobView:
        """The job's snapshot now (hold cond)."""
        position = 0
        if job.id in self.queue:
            position = self.queue.index(job.id) + len(self.running)
        return JobView(
            id=job.id, session=job.session, state=job.state, position=position, prompt=job.config.prompt.text,
            total_steps=job.config.optim.steps,
            run_dir=job.run_dir, config_yaml=job.config_yaml, notice=job.notice, message=job.message,
            outcome=job.outcome, steps=job.steps.view(), preview=job.preview, preview_step=job.preview_step,
            files=dict(job.files), controls=job.controls.snapshot(), version=job.version,
            kind=job.kind, progress=job.progress, data=dict(job.data), exporting=job.exporting, resumed=job.resume,
            detached=job.detached, prior_samples=job.prior_samples,
        )
