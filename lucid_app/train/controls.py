"""Live controls of a running job: pause, resume, stop and the knobs a user may turn mid-run.

The UI (or any other thread) writes; the training thread reads one consistent :class:`ControlState`
snapshot at the start of every step, so a change takes effect at the next step and no step ever sees half of
a change. The config itself is never mutated: the trainer combines the frozen config with the snapshot.

The prompt set in force (negative prompt, view suffixes, Perp-Neg settings and their encoded embeddings) is one
frozen :class:`PromptState` inside the snapshot, replaced with a single assignment under the lock: a step uses the
old set or the new one entirely. Encoding happens before, in the caller's thread (``lucid_app.train.prompt_changes``);
nothing here touches a prior.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lucid_app.config import replace
from lucid_app.config.coerce import coerce, field_types

if TYPE_CHECKING:
    from lucid_app.config import ControlChange, GuidanceConfig, PromptConfig
    from lucid_app.guidance.prompts import PromptEmbeddings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # holds tensors: equality is identity
class PromptState:
    """The prompt set in force: resolved texts, Perp-Neg settings and the embeddings encoded from them.

    Attributes:
        prompt: the prompt config in force (``negative`` is text, never ``@NAME``).
        perp_neg, perp_neg_weight, front_decay, side_decay: the Perp-Neg settings in force (GuidanceConfig's).
        embeddings: the encoded prompts of ``prompt`` (``base`` [1, ...], ``views`` [3, ...], ``negative`` [1, ...]).
        version: increments with every replacement (set by :meth:`LiveControls.update_prompt`).
    """

    prompt: PromptConfig
    perp_neg: bool
    perp_neg_weight: float
    front_decay: float
    side_decay: float
    embeddings: PromptEmbeddings
    version: int = 0

    def guidance(self, config: GuidanceConfig) -> GuidanceConfig:
        """``config`` with this state's Perp-Neg settings."""
        return replace(config, perp_neg=self.perp_neg, perp_neg_weight=self.perp_neg_weight,
                                   front_decay=self.front_decay, side_decay=self.side_decay)


@dataclass(frozen=True)
class ControlState:
    """One consistent snapshot of the live controls.

    Attributes:
        guidance_scale: CFG scale used from the next step on.
        delta_t: final δ_T of the annealing schedule (DESIGN §4 step 1).
        delta_t_start: initial δ_T of the annealing schedule.
        preview_every: emit preview images every this many steps (0 = never).
        paused: the trainer waits before the next step while set.
        stop: the trainer ends after the current step and exports what exists.
        skip_export: the end export stops after ``model.ply`` (and the checkpoint): no turntable, views or mesh.
        prompt: the prompt set in force from the next step; None until a trainer has encoded its prompts.
        version: increments with every change (lets readers log changes once).
    """

    guidance_scale: float
    delta_t: int
    delta_t_start: int
    preview_every: int
    paused: bool = False
    stop: bool = False
    skip_export: bool = False
    prompt: PromptState | None = None
    version: int = 0


_TUNABLE = ("guidance_scale", "delta_t", "delta_t_start", "preview_every")
# The tunables that change what a run computes: recorded in ``config.control_schedule`` (preview_every does not).
RECORDED_CONTROLS = ("guidance_scale", "delta_t", "delta_t_start")


class LiveControls:
    """Thread-safe holder of a :class:`ControlState`.

    ``paused`` in the state and the event the trainer waits on change together under one lock, so every snapshot
    agrees with what the trainer does: ``snapshot().paused == not <trainer blocked>`` unless stopped (a stopped
    run never blocks, so that it can end and export). Two unlocked steps would let a concurrent pause and resume
    interleave into a state that shows "paused" while the trainer runs, or the reverse.
    """

    def __init__(self, initial: ControlState) -> None:
        self._state = initial
        self._lock = threading.Lock()
        self._resumed = threading.Event()
        self._resumed.set()
        self._step = 0
        # Tunable names changed through update(): a later replace_defaults() keeps them.
        self._changed: set[str] = set()

    def snapshot(self) -> ControlState:
        with self._lock:
            return self._state

    def begin_step(self, step: int) -> ControlState:
        """The snapshot that step ``step`` uses (called by the trainer once per step): any change made after this
        call acts from step ``step + 1``."""
        with self._lock:
            self._step = step
            return self._state

    def update_prompt(self, change: Callable[[PromptState | None], PromptState]) -> tuple[PromptState, int]:
        """Replace the prompt state by ``change(current)`` in one assignment under the lock.

        ``change`` runs under the lock, so it must be quick and must not encode (compose already encoded tensors,
        e.g. ``prompt_changes.apply_change``); it sees every earlier change, so concurrent writers lose nothing.

        Returns:
            (the new state, the first step that will use it).
        """
        with self._lock:
            current = self._state.prompt
            new = dataclasses.replace(change(current), version=(current.version + 1) if current is not None else 1)
            self._state = dataclasses.replace(self._state, prompt=new, version=self._state.version + 1)
            step = self._step + 1
        logger.info("prompt set changed (version %d, from step %d)", new.version, step)
        return new, step

    def update(self, **changes: float | int) -> ControlState:
        """Change tunable values (``guidance_scale``, ``delta_t``, ``delta_t_start``, ``preview_every``).

        The names are remembered as chosen (by the user, or a restored checkpoint): :meth:`replace_defaults` keeps
        them.

        Raises:
            ValueError: an unknown name or an out-of-range value (named in the message).
        """
        typed = _checked(changes)
        with self._lock:
            self._changed.update(typed)
            state = self._replace(**typed)
        _log_change(typed)
        return state

    def replace_defaults(self, **defaults: float | int) -> ControlState:
        """Replace the starting values of the tunable controls that no :meth:`update` has changed.

        For a job whose config was replaced before it started (the offline demo instead of the requested model):
        the new config's starting values apply, but a value the user set meanwhile is the user's choice and stays.
        Checked and applied under the lock, so a concurrent :meth:`update` lands either before (and is kept) or
        after (and wins).

        Raises:
            ValueError: an unknown name or an out-of-range value (named in the message).
        """
        typed = _checked(defaults)
        with self._lock:
            kept = sorted(self._changed & set(typed))
            untouched = {k: v for k, v in typed.items() if k not in self._changed}
            state = self._replace(**untouched) if untouched else self._state
        if kept:
            logger.info("controls set by the user kept: %s", ", ".join(kept))
        if untouched:
            _log_change(untouched)
        return state

    def pause(self) -> None:
        """Block the trainer before its next step (no effect on a stopped run, which must be free to end)."""
        with self._lock:
            if not self._state.stop:
                self._resumed.clear()
            self._replace(paused=True)
        _log_change({"paused": True})

    def resume(self) -> None:
        with self._lock:
            self._replace(paused=False)
            self._resumed.set()
        _log_change({"paused": False})

    def stop(self) -> None:
        with self._lock:
            self._replace(stop=True)
            self._resumed.set()
        _log_change({"stop": True})

    def skip_export(self) -> None:
        """End the run's export after ``model.ply``; a run still training ends first (as :meth:`stop`)."""
        with self._lock:
            self._replace(stop=True, skip_export=True)
            self._resumed.set()
        _log_change({"skip_export": True})

    def wait_while_paused(self, timeout_s: float | None = None) -> bool:
        """Block while paused (returns at once otherwise); True when running again, False on timeout."""
        return self._resumed.wait(timeout_s)

    def _replace(self, **changes: object) -> ControlState:
        """The state with ``changes`` and a new version (the caller holds the lock)."""
        self._state = dataclasses.replace(self._state, version=self._state.version + 1, **changes)
        return self._state


def _checked(changes: dict[str, float | int]) -> dict[str, float | int]:
    """Tunable ``changes`` validated against the schema's own bounds and typed (``guidance_scale`` float, the others
    int; a whole-number float is taken as the int it is), so every live value can be recorded and loaded back.

    Raises:
        ValueError: an unknown name or a value of the wrong type or out of bounds (ConfigError, named in the message).
    """
    unknown = sorted(set(changes) - set(_TUNABLE))
    if unknown:
        raise ValueError(f"unknown control {unknown[0]!r}; valid: {', '.join(_TUNABLE)}")
    types = _tunable_types()
    typed: dict[str, float | int] = {}
    for name, value in changes.items():
        if typing.get_args(types[name])[0] is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        typed[name] = coerce(value, types[name], name)
    return typed


@functools.cache
def _tunable_types() -> dict[str, Any]:
    """The schema's annotation of each tunable (GuidanceConfig's, and ExportConfig's ``preview_every``)."""
    from lucid_app.config import ExportConfig, GuidanceConfig

    guidance, export = field_types(GuidanceConfig), field_types(ExportConfig)
    return {name: export[name] if name == "preview_every" else guidance[name] for name in _TUNABLE}


def _log_change(changes: dict[str, object]) -> None:
    logger.info("controls changed: %s", ", ".join(f"{k}={v}" for k, v in changes.items()))


# ---------------------------------------------------------------------------------------------- the control schedule


def scheduled_control_change(schedule: tuple[ControlChange, ...], step: int) -> dict[str, float | int]:
    """{name: value} of the schedule's change at ``step`` (empty when none): what a replay sets before that step."""
    for change in schedule:
        if change.step == step:
            return {name: getattr(change, name) for name in RECORDED_CONTROLS if getattr(change, name) is not None}
    return {}


def record_control_change(
    schedule: tuple[ControlChange, ...], step: int, before: ControlState, after: ControlState
) -> tuple[tuple[ControlChange, ...], ControlChange | None]:
    """The schedule with the change from ``before`` (the values the previous step used) to ``after`` (step
    ``step``'s snapshot), and that change (None when the recorded values are equal).

    A change the schedule already holds at ``step`` (a replay) returns the same tuple object, so callers can tell
    that nothing new was recorded; otherwise the change is merged into the entry at ``step`` (or inserted in order).
    """
    from lucid_app.config import ControlChange

    diff = {name: getattr(after, name) for name in RECORDED_CONTROLS if getattr(after, name) != getattr(before, name)}
    if not diff:
        return schedule, None
    existing = next((c for c in schedule if c.step == step), None)
    merged = {**(scheduled_control_change(schedule, step) if existing else {}), **diff}
    change = ControlChange(step=step, **merged)
    if change == existing:
        return schedule, change
    kept = [c for c in schedule if c.step != step]
    return tuple(sorted([*kept, change], key=lambda c: c.step)), change
