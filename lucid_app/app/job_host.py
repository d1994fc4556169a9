"""The side of a training job where it runs: its prior, trainer and live controls (one per job).

Every executor runs a job through a :class:`JobHost`: the in-process executor calls it directly on the job's thread
(``executors.py``), the worker-process executor calls it in a capped child process (``process_executor.py``) and the
Ray executor in an actor (``ray_executor.py``). The app talks to it only through the calls that cross those
boundaries, with plain picklable values:

* :meth:`prepare` loads the model and builds the trainer (a new run, or a resumed one from its folder);
* :meth:`train` runs it, handing every event to ``emit``, each step's preceded by the run's prior evaluations so far
  (:class:`PriorSamples`: the prior is wrapped in a counter, so the A/B table can show a run's cost whichever executor
  ran it);
* :meth:`sync` applies the app's control snapshot (versioned: an older one never undoes a newer one);
* :meth:`change_prompt` encodes a prompt change where the prior is; :meth:`prompt_update` hands back the prompt
  state in force when it changed (with its tensors on the CPU);
* :meth:`snapshot` returns the live Gaussians at the next step boundary.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lucid_app.avatar import check_avatar
from lucid_app.avatar.body import AvatarError
from lucid_app.bench.quality import CountingPrior
from lucid_app.config import ConfigError, ModelConfig, PromptChange, TrainConfig, from_yaml, replace
from lucid_app.io.checkpoints import load_checkpoint
from lucid_app.io.run_layout import CHECKPOINT_NAME, CONFIG_NAME
from lucid_app.lab.doctor.verdicts import drift_notice
from lucid_app.priors import load_prior
from lucid_app.priors.base import DiffusionPrior, PriorError
from lucid_app.train.controls import ControlState, LiveControls, PromptState
from lucid_app.train.events import Event, GaussianSnapshot, StepEvent
from lucid_app.train.prepare import load_run_prior, resolve_model_id
from lucid_app.train.prompt_changes import request_change
from lucid_app.train.trainer import Trainer, initial_controls

logger = logging.getLogger(__name__)

# The controls the app may set, and the flags; what :meth:`JobHost.sync` carries.
TUNABLE = ("guidance_scale", "delta_t", "delta_t_start", "preview_every")
FLAGS = ("paused", "stop", "skip_export")
# A fast tokenizer must not encode in two threads at once: in-process hosts share the cached prior.
_ENCODE_LOCK = threading.Lock()

PriorLoad = Callable[[ModelConfig, torch.device], DiffusionPrior]
TrainerFactory = Callable[..., Any]


@dataclass(frozen=True)
class JobStart:
    """What :meth:`JobHost.prepare` hands back: the config that runs (the offline demo's after a fallback, a resumed
    run's own), the demo's notice (None if none), and the run's starting tunable controls (a resumed run's are those
    of its checkpoint), or ``error``: a message for the user when the job cannot start."""

    config: TrainConfig | None = None
    notice: str | None = None
    controls: dict[str, float | int] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class PriorSamples:
    """The run's prior evaluations so far, in samples (one view at one timestep and prompt = 1): what
    :meth:`JobHost.train` hands over just before each :class:`~lucid_app.train.events.StepEvent` (the count after
    that step), so that the step and its count reach the app's job record together."""

    samples: int


# What a host hands to its ``emit``: the trainer's events and the prior's count.
HostEvent = Event | PriorSamples


def control_fields(state: ControlState) -> dict[str, Any]:
    """The part of a control snapshot that crosses to the job (:meth:`JobHost.sync`)."""
    return {name: getattr(state, name) for name in (*TUNABLE, *FLAGS)}


def cpu_prompt(state: PromptState) -> PromptState:
    """The prompt state with its embeddings on the CPU (the app's process may have no GPU)."""
    e = state.embeddings
    cpu = dataclasses.replace(e, base=e.base.cpu(), views=e.views.cpu(), negative=e.negative.cpu(),
                              inverse=e.inverse.cpu())
    return dataclasses.replace(state, embeddings=cpu)


class JobHost:
    """One training job where it runs (module docstring).

    Args:
        config: the job's config (for a resumed run: the config in its folder, as read by the app).
        allow_demo: the offline demo may stand in for the default model.
        run_dir: the run's folder.
        device: where it trains.
        resume: continue the run in ``run_dir`` from its checkpoint (``generate --resume``) instead of a new run.
        loader: loads a prior (default :func:`lucid_app.priors.load_prior`; the app passes its model cache).
        trainer_factory: ``(config, prior, run_dir=, controls=, device=)`` → a trainer (tests pass fakes); a resumed
            run is always a :class:`Trainer`.
    """

    def __init__(self, config: TrainConfig, allow_demo: bool, run_dir: str | Path, device: torch.device | str, *,
                 resume: bool = False, loader: PriorLoad | None = None,
                 trainer_factory: TrainerFactory = Trainer) -> None:
        self.config, self.allow_demo, self.run_dir = config, allow_demo, Path(run_dir)
        self.device = torch.device(device)
        self.resume = resume
        self._load = loader or (lambda model, device: load_prior(model.id, model, device))
        self._factory = trainer_factory
        self.controls = LiveControls(initial_controls(config))
        self._synced = -1
        self._sync_lock = threading.Lock()
        self._prompt_version = -1
        self.trainer: Any = None
        # The prior the trainer evaluates, behind a counter (set by prepare).
        self.counted: CountingPrior | None = None

    def prepare(self) -> JobStart:
        """Load the model and build the trainer; a user error (missing model, bad avatar, damaged checkpoint) is
        returned as :attr:`JobStart.error`."""
        try:
            if self.resume:
                return self._prepare_resume()
            if self.config.avatar.enabled:
                check_avatar(self.config)
            prepared = load_run_prior(self.config, self.device, self.allow_demo, loader=self._load)
        except (PriorError, ConfigError, AvatarError, OSError) as err:
            return JobStart(error=str(err))
        if prepared.config != self.config:
            start = initial_controls(prepared.config)
            self.controls.replace_defaults(**{name: getattr(start, name) for name in TUNABLE})
        self.counted = CountingPrior(prepared.prior)
        self.trainer = self._factory(prepared.config, self.counted, run_dir=self.run_dir, controls=self.controls,
                                     device=self.device)
        return JobStart(config=prepared.config, notice=prepared.notice, controls=self._tunables())

    def _prepare_resume(self) -> JobStart:
        """A run continued from its folder's checkpoint (the checkpoint is read before the model loads); its notice
        is the doctor's, when its method is known to drift on its model (as a new run's)."""
        saved = from_yaml((self.run_dir / CONFIG_NAME).read_text(encoding="utf-8"))
        if not (self.run_dir / CHECKPOINT_NAME).is_file():
            return JobStart(error=f"the run {self.run_dir.name} has no {CHECKPOINT_NAME} to continue from")
        try:
            state = load_checkpoint(self.run_dir / CHECKPOINT_NAME)
            model = replace(saved.model, id=resolve_model_id(saved.model.id))
            self.counted = CountingPrior(self._load(model, self.device))
            self.trainer = Trainer.resume(self.run_dir, self.counted, controls=self.controls, device=self.device,
                                          state=state)
        except ValueError as err:  # a damaged checkpoint, or one of another run
            return JobStart(error=f"the run {self.run_dir.name} cannot be resumed: {str(err).splitlines()[0]}")
        config = self.trainer.config
        return JobStart(config=config, notice=drift_notice(config.model.id, config.guidance.method),
                        controls=self._tunables())

    def _tunables(self) -> dict[str, float | int]:
        state = self.controls.snapshot()
        return {name: getattr(state, name) for name in TUNABLE}

    def train(self, emit: Callable[[HostEvent], None]) -> None:
        """Run the trainer to its end, handing each event to ``emit``, a :class:`StepEvent` after the
        :class:`PriorSamples` of its step (errors propagate after its export)."""
        counted = self.counted

        def relay(event: Event) -> None:
            if counted is not None and isinstance(event, StepEvent):
                emit(PriorSamples(counted.samples))
            emit(event)

        self.trainer.run(relay)

    def prompt_update(self) -> PromptState | None:
        """The prompt state in force (on the CPU) when it changed since the last call, else None."""
        state = self.controls.snapshot().prompt
        if state is None or state.version == self._prompt_version:
            return None
        self._prompt_version = state.version
        return cpu_prompt(state)

    def sync(self, fields: dict[str, Any], version: int) -> None:
        """Apply the app's control snapshot ``fields`` (:func:`control_fields`) unless a later one (higher
        ``version``) was applied."""
        with self._sync_lock:
            if version <= self._synced:
                return
            self._synced = version
            current = self.controls.snapshot()
            changed = {k: fields[k] for k in TUNABLE if fields[k] != getattr(current, k)}
            if changed:
                self.controls.update(**changed)
            if fields["skip_export"] and not current.skip_export:
                self.controls.skip_export()
            elif fields["stop"] and not current.stop:
                self.controls.stop()
            if fields["paused"] != current.paused:
                self.controls.pause() if fields["paused"] else self.controls.resume()

    def change_prompt(self, changes: dict[str, object]) -> tuple[PromptChange, PromptState] | str:
        """Encode and swap in checked prompt changes; the error message instead for a change refused here."""
        if self.trainer is None or self.controls.snapshot().prompt is None:
            return ("the run has not started training yet (its model is still loading); prompt changes act on a "
                    "running job: try again in a moment")
        try:
            with _ENCODE_LOCK:
                change = request_change(self.controls, self.trainer.prior, changes)
        except ValueError as err:
            return str(err)
        return change, cpu_prompt(self.controls.snapshot().prompt)

    def snapshot(self, timeout_s: float) -> GaussianSnapshot | str:
        """The trainer's Gaussians at its next step boundary; the error message on a timeout."""
        if self.trainer is None:
            return "the run has not started training yet"
        try:
            return self.trainer.request_snapshot().result(timeout=timeout_s)
        except (FutureTimeout, TimeoutError):
            return f"no step boundary within {timeout_s:g} s"


__all__ = ["FLAGS", "TUNABLE", "HostEvent", "JobHost", "JobStart", "PriorSamples", "control_fields", "cpu_prompt"]
