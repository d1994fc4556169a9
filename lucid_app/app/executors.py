"""Where the app's training jobs run: the :class:`~lucid_app.app.jobs.JobManager`'s pluggable executor.

Without an executor (the default) the manager's own worker thread runs each job in this process, on its device, with
the trainer sharing the job's :class:`~lucid_app.train.controls.LiveControls`. An executor runs jobs elsewhere (a Ray actor
per job: ``lucid_app.app.ray_executor.RayExecutor``); the manager then drives a :class:`RemoteRun` per job:

1. ``prepare()`` loads the model and builds the trainer where the job runs (a failure is a :class:`RunError` whose
   message the user sees, e.g. a worker that cannot load the model);
2. ``train(on_event, on_prompt)`` blocks until the run ends, handing over the events the remote trainer emitted (the
   same typed events as in process: steps, previews, the end) and every new prompt state;
3. meanwhile other threads forward the job's controls with ``sync(snapshot)`` (the whole snapshot, versioned, so
   changes that arrive out of order never undo a later one) and prompt changes with ``change_prompt``, and the
   inspector asks for the live Gaussians with ``snapshot``;
4. ``release()`` frees the worker.

The trainer does not know which executor runs it (DESIGN §6b). Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from lucid_app.config import PromptChange, TrainConfig
from lucid_app.train.controls import ControlState, PromptState
from lucid_app.train.events import Event, GaussianSnapshot


class RunError(Exception):
    """A remote job that cannot start or went away (the model does not load there, the worker died); the message is
    for the user and holds no server paths."""


class RemoteRun(Protocol):
    """One training job running outside the manager's process (see the module docstring for the order of calls)."""

    def prepare(self) -> tuple[TrainConfig, str | None]:
        """Load the model and build the trainer; returns (the config that runs, the offline demo's notice or None).

        Raises:
            RunError: the job cannot start (its message says why).
        """
        ...

    def train(self, on_event: Callable[[Event], None], on_prompt: Callable[[PromptState], None]) -> None:
        """Run to the end, calling ``on_event`` for each event and ``on_prompt`` for each new prompt state.

        Raises:
            RunError: the worker died or the run raised; the trainer exported what it had where it could.
        """
        ...

    def sync(self, state: ControlState) -> None:
        """Forward the job's live controls (tunables, paused, stop); never blocks on the run."""
        ...

    def change_prompt(self, changes: dict[str, object]) -> tuple[PromptChange, PromptState]:
        """Encode checked prompt changes (``prompt_changes.check_changes``) where the prior is and swap them in.

        Returns:
            (the change with its first step, the new prompt state with its tensors on the CPU).

        Raises:
            ValueError: the remote side refused the change (its message).
        """
        ...

    def snapshot(self, timeout_s: float) -> GaussianSnapshot:
        """The remote trainer's Gaussians between two steps (``Trainer.request_snapshot``), as CPU arrays.

        Raises:
            RunError: no snapshot within ``timeout_s`` (or the worker went away).
        """
        ...

    def release(self) -> None:
        """Free the worker (idempotent)."""
        ...


class JobExecutor(Protocol):
    """Opens a :class:`RemoteRun` per job; ``slots`` jobs run at once, the others wait in the manager's FIFO queue."""

    slots: int

    def open(self, config: TrainConfig, allow_demo: bool, run_dir: str) -> RemoteRun: ...

    def close(self) -> None: ...


__all__ = ["JobExecutor", "RemoteRun", "RunError"]
