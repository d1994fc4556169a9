"""The app's Ray executor: each job is an actor holding its trainer (Ray itself: :mod:`lucid_app.batch.cluster`).

Why an actor per app job: the job holds state (the trainer, its Gaussians and live controls) that the app talks to
while it runs, through method calls: ``sync`` (controls, pause, resume, stop), ``change_prompt``, ``poll`` (events
and the prompt state, pulled by the app as the in-process worker hands them over) and ``snapshot`` (the live Gaussians, for the inspector).
``train`` runs in the actor's "run" concurrency group, every other method in the default group of one thread, so a
control call never waits for a step and control calls run in the order they were sent. The actor is killed when the
job ends, which frees its GPU. Batches (``lucid_app.batch.run``) use plain tasks instead: nothing talks to them, and Ray
retries a task whose worker died.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lucid_app.app.executors import RunError
from lucid_app.batch.cluster import connect, import_ray, job_resources, worker_device
from lucid_app.config import PromptChange, TrainConfig
from lucid_app.train.controls import ControlState, LiveControls, PromptState
from lucid_app.train.events import Event, GaussianSnapshot

logger = logging.getLogger(__name__)

POLL_S = 0.2
_TUNABLE = ("guidance_scale", "delta_t", "delta_t_start", "preview_every")




class TrainingActor:
    """One app job inside a Ray worker: its prior, trainer and live controls (wrapped by ``ray.remote`` on use)."""

    def __init__(self, config: TrainConfig, allow_demo: bool, run_dir: str, device: str) -> None:
        from lucid_app.train.trainer import initial_controls

        self._config, self._allow_demo, self._run_dir, self._device = config, allow_demo, run_dir, device
        self._controls = LiveControls(initial_controls(config))
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._synced = -1
        self._trainer: Any = None

    def prepare(self) -> dict[str, Any]:
        """Load the model and build the trainer: {"config", "notice"}, or {"error": message} for a user error."""
        from lucid_app.avatar import check_avatar
        from lucid_app.avatar.body import AvatarError
        from lucid_app.config import ConfigError
        from lucid_app.priors.base import PriorError
        from lucid_app.train.prepare import load_run_prior
        from lucid_app.train.trainer import Trainer, initial_controls

        try:
            if self._config.avatar.enabled:
                check_avatar(self._config)
            prepared = load_run_prior(self._config, self._device, self._allow_demo)
        except (PriorError, ConfigError, AvatarError, OSError) as err:
            return {"error": f"the Ray worker on {_node()} could not load the model: {err}"}
        if prepared.config != self._config:
            start = initial_controls(prepared.config)
            self._controls.replace_defaults(guidance_scale=start.guidance_scale, delta_t=start.delta_t,
                                            delta_t_start=start.delta_t_start, preview_every=start.preview_every)
        self._trainer = Trainer(prepared.config, prepared.prior, run_dir=self._run_dir, controls=self._controls,
                                device=self._device)
        return {"config": prepared.config, "notice": prepared.notice}

    def train(self) -> None:
        self._trainer.run(self._push)

    def _push(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def poll(self, prompt_version: int) -> tuple[list[Event], PromptState | None]:
        """The events since the last poll, and the prompt state when its version differs from ``prompt_version``."""
        with self._lock:
            events, self._events = self._events, []
        state = self._controls.snapshot().prompt
        return events, (_cpu_prompt(state) if state is not None and state.version != prompt_version else None)

    def sync(self, fields: dict[str, Any], version: int) -> None:
        """Apply the app's control snapshot ``fields`` unless a later one (higher ``version``) was applied."""
        if version <= self._synced:
            return
        self._synced = version
        current = self._controls.snapshot()
        changed = {k: fields[k] for k in _TUNABLE if fields[k] != getattr(current, k)}
        if changed:
            self._controls.update(**changed)
        if fields["stop"] and not current.stop:
            self._controls.stop()
        if fields["paused"] != current.paused:
            self._controls.pause() if fields["paused"] else self._controls.resume()

    def change_prompt(self, changes: dict[str, object]) -> tuple[PromptChange, PromptState] | str:
        """Encode and swap in a prompt change; the error message instead for a change refused here."""
        from lucid_app.train.prompt_changes import request_change

        try:
            change = request_change(self._controls, self._trainer.prior, changes)
        except ValueError as err:
            return str(err)
        return change, _cpu_prompt(self._controls.snapshot().prompt)

    def snapshot(self, timeout_s: float) -> GaussianSnapshot | str:
        """The trainer's Gaussians at its next step boundary; the error message on a timeout."""
        from concurrent.futures import TimeoutError as FutureTimeout

        try:
            return self._trainer.request_snapshot().result(timeout=timeout_s)
        except FutureTimeout:
            return f"no step boundary within {timeout_s:g} s"


def _node() -> str:
    import socket

    return socket.gethostname()


def _cpu_prompt(state: PromptState) -> PromptState:
    """The prompt state with its embeddings on the CPU (the app's process may have no GPU)."""
    e = state.embeddings
    cpu = dataclasses.replace(e, base=e.base.cpu(), views=e.views.cpu(), negative=e.negative.cpu(), inverse=e.inverse.cpu())
    return dataclasses.replace(state, embeddings=cpu)


def _control_fields(state: ControlState) -> dict[str, Any]:
    return {**{k: getattr(state, k) for k in _TUNABLE}, "paused": state.paused, "stop": state.stop}


class RayRun:
    """The app's handle of one job's actor (a :class:`~lucid_app.app.executors.RemoteRun`)."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor
        self._released = False

    def prepare(self) -> tuple[TrainConfig, str | None]:
        result = self._get(self._actor.prepare.remote())
        if "error" in result:
            raise RunError(result["error"])
        return result["config"], result["notice"]

    def train(self, on_event: Callable[[Event], None], on_prompt: Callable[[PromptState], None]) -> None:
        ray = import_ray()
        done = self._actor.train.remote()
        prompt_version = -1
        while True:
            finished = bool(ray.wait([done], timeout=POLL_S)[0])
            events, state = self._get(self._actor.poll.remote(prompt_version))
            if state is not None:
                prompt_version = state.version
                on_prompt(state)
            for event in events:
                on_event(event)
            if finished:
                self._get(done)
                return

    def sync(self, state: ControlState) -> None:
        if not self._released:
            self._actor.sync.remote(_control_fields(state), state.version)

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

    def open(self, config: TrainConfig, allow_demo: bool, run_dir: str | Path) -> RayRun:
        actor = self._actor_class.remote(config, allow_demo, str(run_dir), worker_device(self.gpus_per_job))
        return RayRun(actor)

    def close(self) -> None:
        """Shut Ray down if this executor connected it."""
        if self._connected:
            import_ray().shutdown()
            self._connected = False


__all__ = ["RayExecutor", "RayRun", "TrainingActor"]
