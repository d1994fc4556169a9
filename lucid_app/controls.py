"""Live controls of a running job: pause, resume, stop and the knobs a user may turn mid-run.

The UI (or any other thread) writes; the training thread reads one consistent :class:`ControlState`
snapshot at the start of every step, so a change takes effect at the next step and no step ever sees half of
a change. The config itself is never mutated: the trainer combines the frozen config with the snapshot.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)


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
        version: increments with every change (lets readers log changes once).
    """

    guidance_scale: float
    delta_t: int
    delta_t_start: int
    preview_every: int
    paused: bool = False
    stop: bool = False
    version: int = 0


_TUNABLE = ("guidance_scale", "delta_t", "delta_t_start", "preview_every")


class LiveControls:
    """Thread-safe holder of a :class:`ControlState`."""

    def __init__(self, initial: ControlState) -> None:
        self._state = initial
        self._lock = threading.Lock()
        self._resumed = threading.Event()
        self._resumed.set()

    def snapshot(self) -> ControlState:
        with self._lock:
            return self._state

    def update(self, **changes: float | int) -> ControlState:
        """Change tunable values (``guidance_scale``, ``delta_t``, ``delta_t_start``, ``preview_every``).

        Raises:
            ValueError: an unknown name or an out-of-range value (named in the message).
        """
        unknown = sorted(set(changes) - set(_TUNABLE))
        if unknown:
            raise ValueError(f"unknown control {unknown[0]!r}; valid: {', '.join(_TUNABLE)}")
        if "guidance_scale" in changes and not float(changes["guidance_scale"]) >= 0.0:
            raise ValueError(f"guidance_scale must be >= 0, got {changes['guidance_scale']}")
        for name in ("delta_t", "delta_t_start", "preview_every"):
            if name in changes and int(changes[name]) < 0:
                raise ValueError(f"{name} must be >= 0, got {changes[name]}")
        typed = {k: (float(v) if k == "guidance_scale" else int(v)) for k, v in changes.items()}
        return self._set(**typed)

    def pause(self) -> None:
        self._resumed.clear()
        self._set(paused=True)

    def resume(self) -> None:
        self._set(paused=False)
        self._resumed.set()

    def stop(self) -> None:
        self._set(stop=True)
        self._resumed.set()

    def wait_while_paused(self, timeout_s: float | None = None) -> bool:
        """Block while paused (returns at once otherwise); True when running again, False on timeout."""
        return self._resumed.wait(timeout_s)

    def _set(self, **changes: object) -> ControlState:
        with self._lock:
            self._state = dataclasses.replace(self._state, version=self._state.version + 1, **changes)
            state = self._state
        logger.info("controls changed: %s", ", ".join(f"{k}={v}" for k, v in changes.items()))
        return state
