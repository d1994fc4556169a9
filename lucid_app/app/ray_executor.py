"""The app's Ray executor: each job is an actor holding its trainer (Ray itself: :mod:`lucid_app.batch.cluster`).

Why an actor per app job: the job holds state (the trainer, its Gaussians and live controls: a
:class:`~lucid_app.app.job_host.JobHost`) that the app talks to while it runs, through method calls: ``sync``
(controls, pause, resume, stop, skip export), ``change_prompt``, ``poll`` (events and the prompt state, pulled by the
app as the in-process executor hands them over) and ``snapshot`` (the live Gaussians, for the inspector).
``train`` runs in the actor's "run" concurrency group, every other method in the default group of one thread, so a
control call never waits for a step and control calls run in the order they were sent. The actor is killed when the
job ends, which frees its GPU. Batches (``lucid_app.batch.run``) use plain tasks instead: nothing talks to them, and Ray
retries a task whose worker died.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lucid_app.app.executors import RunError, started
from lucid_app.app.job_host import HostEvent, JobHost, JobStart, control_fields
from lucid_app.batch.cluster import connect, import_ray, job_resources, worker_device
from lucid_app.config import ModelConfig, PromptChange, TrainConfig
from lucid_app.train.controls import ControlState, PromptState
from lucid_app.train.events import GaussianSnapshot

logger = logging.getLogger(__name__)

POLL_S = 0.2


class TrainingActor(JobHost):
    """One app job inside a Ray worker: a :class:`~lucid_app.app.job_host.JobHost` whose events wait in a buffer
    for the app's :meth:`poll` (wrapped by ``ray.remote`` on use)."""

    def __init__(self, config: TrainConfig, allow_demo: bool, run_dir: str, device: str,
                 resume: bool = False) -> None:
        super().__init__(config, allow_demo, run_dir, device, resume=resume)
        self._events: list[HostEvent] = []
        self._lock = threading.Lock()

    def prepare(self) -> JobStart:
        start = super().prepare()
        if start.error:
            return JobStart(error=f"the Ray worker on {_node()} could not load the model: {start.error}")
        return start

    def train(self) -> None:  # type: ignore[override]  # the actor's train pushes to its buffer
        super().train(self._push)

    def _push(self, event: HostEvent) -> None:
        with self._lock:
            self._events.append(event)

    def poll(self) -> tuple[list[HostEvent], PromptState | None]:
        """The events since the last poll, and the prompt state in force when it changed since the last poll."""
        with self._lock:
            events, self._events = self._events, []
        return events, self.prompt_update()


def _node() -> str:
    import socket

    return socket.gethostname()


class RayRun:
    """The app's handle of one job's actor (a :class:`~lucid_app.app.executors.JobRun`)."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor
        self._released = False

    def prepare(self) -> JobStart:
        return started(self._get(self._actor.prepare.remote()))

    def train(self, on_event: Callable[[HostEvent], None], on_prompt: Callable[[PromptState], None]) -> None:
        ray = import_ray()
        done = self._actor.train.remote()
        while True:
            finished = bool(ray.wait([done], timeout=POLL_S)[0])
            events, state = self._get(self._actor.poll.remote())
            if state is not None:
                on_prompt(state)
            for event in events:
                on_event(event)
            if finished:
                self._get(done)
                return

    def sync(self, state: ControlState) -> None:
        if not self._released:
            self._actor.sync.remote(control_fields(state), state.version)

    def change_prompt(self, changes: dict[str, object]) -> tuple[PromptChange, PromptState]:
        result = self._get(self._actor.change_prompt.remote(changes))
        if isinstance(result, str):
            raise ValueError(result)
        return result

    def snapshot(self, timeout_s: float) -> GaussianSnapshot:
        result = self._get(self._actor.snapshot.remote(timeout_s))
        if isinstance(result, str):
            raise RunError(result)
        return result

    def release(self) -> None:
        if not self._released:
            self._released = True
            import_ray().kill(self._actor)

    def _get(self, ref: Any) -> Any:
        ray = import_ray()
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as err:
            logger.warning("Ray actor died: %s", err)
            raise RunError("the Ray worker running this job died (killed, or out of memory); the run folder keeps "
                           "its last checkpoint") from None
        except ray.exceptions.RayTaskError as err:
            logger.error("the job failed on its Ray worker: %s", err)
            raise RunError(f"internal error on the Ray worker ({type(err.cause).__name__}); the server log has the "
                           "details") from None


class RayExecutor:
    """The app's jobs as Ray actors, ``slots`` at once (one per GPU; on CPUs, one per ``cpus_per_job`` CPUs).

    Args:
        address: ``local``, ``auto`` or a cluster address (see :func:`connect`).
        gpus_per_job: GPUs each job reserves (None: 1 when the cluster has GPUs, else 0).
        cpus_per_job: CPUs each job reserves.
        slots: jobs at once (default: as many as the cluster's resources allow).
        num_cpus: the CPU slots of a ``local`` instance (default: all of this machine's).
    """

    def __init__(self, address: str = "local", gpus_per_job: float | None = None, cpus_per_job: float = 1.0,
                 slots: int | None = None, num_cpus: int | None = None) -> None:
        self._connected = connect(address, num_cpus=num_cpus)
        self.gpus_per_job, self.cpus_per_job, fit = job_resources(gpus_per_job, cpus_per_job)
        self.slots = slots or fit
        ray = import_ray()
        # ``train`` in its own group; every other method in the default group of one thread, in the order sent.
        ray.method(concurrency_group="run")(TrainingActor.train)
        self._actor_class = ray.remote(num_gpus=self.gpus_per_job, num_cpus=self.cpus_per_job, max_restarts=0,
                                       concurrency_groups={"run": 1})(TrainingActor)
        logger.info("Ray executor: %d job(s) at once, %g GPU and %g CPU each", self.slots, self.gpus_per_job,
                    self.cpus_per_job)

    def open(self, config: TrainConfig, allow_demo: bool, run_dir: str | Path, resume: bool = False) -> RayRun:
        actor = self._actor_class.remote(config, allow_demo, str(run_dir), worker_device(self.gpus_per_job), resume)
        return RayRun(actor)

    def warm(self, model: ModelConfig) -> None:
        """Nothing to warm (:meth:`JobExecutor.warm`): each job's actor is new, on whichever node has room, and
        loads its own model there."""
        logger.info("warm-up skipped for model %s: each Ray actor loads its job's model", model.id)

    def close(self) -> None:
        """Shut Ray down if this executor connected it."""
        if self._connected:
            import_ray().shutdown()
            self._connected = False


__all__ = ["RayExecutor", "RayRun", "TrainingActor"]
