"""Where the app's training jobs run: the :class:`JobExecutor` interface of the
:class:`~lucid_app.app.jobs.JobManager`, and its in-process implementation.

The manager drives every training job through one interface, whichever executor runs it: a :class:`JobRun` per job,
opened by the executor. Executors:

* :class:`InProcessExecutor` (this module): the job's :class:`~lucid_app.app.job_host.JobHost` on the manager's
  worker thread, in the server's process, priors through the manager's model cache. For tests (fake trainers
  through ``trainer_factory``) and ``app.py --in-process``.
* :class:`~lucid_app.app.process_executor.ProcessExecutor`: a worker process per running job, with an
  address-space cap, so that a job that runs out of memory fails alone (the app's default).
* :class:`~lucid_app.app.ray_executor.RayExecutor`: a Ray actor per job (``app.py --ray``).

The order of calls on a :class:`JobRun`:

1. ``prepare()`` loads the model and builds the trainer where the job runs (a failure is a :class:`RunError` whose
   message the user sees, e.g. a worker that cannot load the model);
2. ``train(on_event, on_prompt)`` blocks until the run ends, handing over the events the trainer emitted (steps,
   previews, the end of training, the export's stages, the end), each step's count of prior evaluations
   (:class:`~lucid_app.app.job_host.PriorSamples`) and every new prompt state;
3. meanwhile other threads forward the job's controls with ``sync(snapshot)`` (the whole snapshot, versioned, so
   changes that arrive out of order never undo a later one) and prompt changes with ``change_prompt``, and the
   inspector asks for the live Gaussians with ``snapshot``;
4. ``release()`` frees the worker.

An executor also warms a model ahead of the first job (``warm``, at the app's start-up): it loads where its jobs
will run, so a cold server's first job finds it loaded, or waits for that load instead of starting its own.

The trainer does not know which executor runs it (DESIGN §6b). Nothing here imports Ray.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from lucid_app.app.job_host import HostEvent, JobHost, JobStart, TrainerFactory, control_fields
from lucid_app.app.model_cache import ModelCache
from lucid_app.config import ModelConfig, PromptChange, TrainConfig
from lucid_app.priors.base import PriorError
from lucid_app.train.controls import ControlState, PromptState
from lucid_app.train.events import GaussianSnapshot

logger = logging.getLogger(__name__)


class RunError(Exception):
    """A job that cannot start or went away (the model does not load there, the worker died or ran out of memory);
    the message is for the user and holds no server paths."""


class JobRun(Protocol):
    """One training job behind an executor (see the module docstring for the order of calls)."""

    def prepare(self) -> JobStart:
        """Load the model and build the trainer; returns its :class:`JobStart` (config, notice, controls).

        Raises:
            RunError: the job cannot start (its message says why).
        """
        ...

    def train(self, on_event: Callable[[HostEvent], None], on_prompt: Callable[[PromptState], None]) -> None:
        """Run to the end, calling ``on_event`` for each event and ``on_prompt`` for each new prompt state.

        Raises:
            RunError: the worker died or the run raised; the trainer exported what it had where it could.
        """
        ...

    def sync(self, state: ControlState) -> None:
        """Forward the job's live controls (tunables, paused, stop, skip export); never blocks on the run."""
        ...

    def change_prompt(self, changes: dict[str, object]) -> tuple[PromptChange, PromptState]:
        """Encode checked prompt changes (``prompt_changes.check_changes``) where the prior is and swap them in.

        Returns:
            (the change with its first step, the new prompt state with its tensors on the CPU).

        Raises:
            ValueError: the job refused the change (its message).
        """
        ...

    def snapshot(self, timeout_s: float) -> GaussianSnapshot:
        """The trainer's Gaussians between two steps (``Trainer.request_snapshot``), as CPU arrays.

        Raises:
            RunError: no snapshot within ``timeout_s`` (or the worker went away).
        """
        ...

    def release(self) -> None:
        """Free the worker (idempotent)."""
        ...


class JobExecutor(Protocol):
    """Opens a :class:`JobRun` per job; ``slots`` jobs train at once, the others wait in the manager's FIFO queue.

    ``open(..., resume=True)`` continues the run in ``run_dir`` from its checkpoint instead of starting one.
    """

    slots: int

    def open(self, config: TrainConfig, allow_demo: bool, run_dir: str, resume: bool = False) -> JobRun: ...

    def warm(self, model: ModelConfig) -> threading.Thread | None:
        """Start loading ``model`` where jobs will run, in the background; a model that cannot be loaded is logged
        (the job that asks for it says why). Returns the loading thread when it runs in this process, else None."""
        ...

    def close(self) -> None: ...


def started(start: JobStart) -> JobStart:
    """``start`` when the job started; its error as a :class:`RunError` otherwise."""
    if start.error:
        raise RunError(start.error)
    return start


class InProcessRun:
    """A :class:`JobRun` whose host runs on the calling thread (``train`` runs the trainer there)."""

    def __init__(self, host: JobHost) -> None:
        self.host = host

    def prepare(self) -> JobStart:
        return started(self.host.prepare())

    def train(self, on_event: Callable[[HostEvent], None], on_prompt: Callable[[PromptState], None]) -> None:
        def relay(event: HostEvent) -> None:
            state = self.host.prompt_update()
            if state is not None:
                on_prompt(state)
            on_event(event)

        self.host.train(relay)

    def sync(self, state: ControlState) -> None:
        self.host.sync(control_fields(state), state.version)

    def change_prompt(self, changes: dict[str, object]) -> tuple[PromptChange, PromptState]:
        result = self.host.change_prompt(changes)
        if isinstance(result, str):
            raise ValueError(result)
        return result

    def snapshot(self, timeout_s: float) -> GaussianSnapshot:
        result = self.host.snapshot(timeout_s)
        if isinstance(result, str):
            raise RunError(result)
        return result

    def release(self) -> None:
        self.host.trainer = self.host.counted = None  # the prior and the Gaussians may go as soon as the job ends


class InProcessExecutor:
    """Jobs in the server's process, one at a time, priors through the manager's model cache (module docstring).

    Args:
        cache: the model cache priors load through. device: where jobs train.
        trainer_factory: ``(config, prior, run_dir=, controls=, device=)`` → object with ``.run(on_event)``.
    """

    slots = 1

    def __init__(self, cache: ModelCache, device: torch.device, trainer_factory: TrainerFactory) -> None:
        self.cache, self.device, self.trainer_factory = cache, device, trainer_factory

    def open(self, config: TrainConfig, allow_demo: bool, run_dir: str | Path, resume: bool = False) -> InProcessRun:
        host = JobHost(config, allow_demo, run_dir, self.device, resume=resume, loader=self.cache.get,
                       trainer_factory=self.trainer_factory)
        return InProcessRun(host)

    def warm(self, model: ModelConfig) -> threading.Thread:
        """Load ``model`` into the model cache on a background thread (:meth:`JobExecutor.warm`; a job that asks
        for it meanwhile waits for this load, :meth:`ModelCache.get`)."""

        def load() -> None:
            started = time.perf_counter()
            try:
                self.cache.get(model, self.device)
            except (PriorError, ValueError, OSError) as err:
                logger.warning("warm-up: model %s not loaded: %s", model.id, err)
                return
            logger.info("warm-up: model %s ready on %s after %.1f s", model.id, self.device,
                        time.perf_counter() - started)

        thread = threading.Thread(target=load, name="lucid-warm-up", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Nothing to free: the jobs ran on the manager's threads."""


__all__ = ["InProcessExecutor", "InProcessRun", "JobExecutor", "JobRun", "RunError", "started"]
