"""Thread-safe live controls."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import pytest

from lucid_app.controls import ControlState, LiveControls


def make() -> LiveControls:
    return LiveControls(ControlState(guidance_scale=7.5, delta_t=80, delta_t_start=100, preview_every=50))


def test_update_is_visible_in_the_next_snapshot_and_versioned() -> None:
    controls = make()
    before = controls.snapshot()
    controls.update(guidance_scale=12, delta_t=40)
    after = controls.snapshot()
    assert (before.guidance_scale, before.delta_t) == (7.5, 80)
    assert (after.guidance_scale, after.delta_t) == (12.0, 40)
    assert after.version == before.version + 1


@pytest.mark.parametrize("bad", [{"guidance": 3}, {"guidance_scale": -1}, {"delta_t": -5}])
def test_bad_updates_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        make().update(**bad)


def test_pause_blocks_until_resume_and_stop_releases() -> None:
    controls = make()
    controls.pause()
    assert controls.snapshot().paused
    assert controls.wait_while_paused(timeout_s=0.05) is False
    threading.Timer(0.05, controls.resume).start()
    start = time.perf_counter()
    assert controls.wait_while_paused(timeout_s=5.0) is True
    assert time.perf_counter() - start < 2.0 and not controls.snapshot().paused
    controls.pause()
    controls.stop()
    assert controls.wait_while_paused(timeout_s=0.5) is True and controls.snapshot().stop


def test_concurrent_updates_are_never_torn() -> None:
    controls = make()

    def writer(value: int) -> None:
        for _ in range(200):
            controls.update(delta_t=value, delta_t_start=value)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (10, 20)]
    for t in threads:
        t.start()
    for _ in range(500):
        snap = controls.snapshot()
        assert snap.delta_t == snap.delta_t_start
    for t in threads:
        t.join()
    assert controls.snapshot().version == 400


# ------------------------------------------------------------------ pause / resume / stop are atomic


def _consistent(controls: LiveControls) -> bool:
    """The invariant: the state says paused exactly when the trainer would block (a stopped run never blocks)."""
    snap = controls.snapshot()
    blocked = not controls.wait_while_paused(timeout_s=0)
    return blocked == (snap.paused and not snap.stop)


def _interleave(controls: LiveControls, method: str, before: bool, other: Callable[[], None]) -> list[threading.Thread]:
    """Make the next ``controls._resumed.<method>()`` run ``other`` in a second thread just before (or after) it.

    The hook gives ``other`` 0.2 s to finish: when the caller holds the controls' lock around the event change (the
    fix), ``other`` blocks on that lock and runs afterwards instead, so the two cannot interleave.
    """
    event = controls._resumed
    original = getattr(event, method)
    threads: list[threading.Thread] = []

    def hooked() -> None:
        setattr(event, method, original)  # once
        if not before:
            original()
        thread = threading.Thread(target=other)
        threads.append(thread)
        thread.start()
        thread.join(0.2)
        if before:
            original()

    setattr(event, method, hooked)
    return threads


@pytest.mark.parametrize("first, method, before", [("pause", "clear", False), ("resume", "set", True)])
def test_pause_and_resume_interleaved_keep_state_and_event_together(first: str, method: str, before: bool) -> None:
    """A resume landing inside a pause (or the reverse) leaves the state and the trainer's event in agreement."""
    controls = make()
    if first == "resume":
        controls.pause()
    other = controls.resume if first == "pause" else controls.pause
    threads = _interleave(controls, method, before, other)
    getattr(controls, first)()
    for thread in threads:
        thread.join(5.0)
    assert threads and _consistent(controls), controls.snapshot()


def test_many_threads_pausing_and_resuming_stay_consistent() -> None:
    """Stress: each round, threads released together by a barrier pause or resume at once; after every round the
    invariant holds. A tiny switch interval makes the interpreter change threads between the two halves of an
    unlocked pause/resume."""
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    controls = make()
    rounds, n_threads = 2000, 4
    barrier = threading.Barrier(n_threads)
    broken: list[ControlState] = []

    def worker(index: int) -> None:
        for k in range(rounds):
            barrier.wait(5.0)
            (controls.pause if (k + index) % 2 else controls.resume)()
            barrier.wait(5.0)
            if index == 0 and not _consistent(controls):
                broken.append(controls.snapshot())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10.0)
    finally:
        sys.setswitchinterval(old_interval)
    assert not broken, f"{len(broken)} of {rounds} rounds inconsistent, e.g. {broken[0]}"


def test_pause_after_stop_never_blocks_the_trainer() -> None:
    """A stopped run must be free to end and export, even if someone presses pause after stop."""
    controls = make()
    controls.stop()
    controls.pause()
    assert controls.wait_while_paused(timeout_s=0.05) is True and controls.snapshot().stop


def test_replace_defaults_keeps_values_the_user_set() -> None:
    controls = make()
    controls.update(guidance_scale=3.0)
    state = controls.replace_defaults(guidance_scale=20.0, delta_t=33, delta_t_start=90, preview_every=7)
    assert (state.guidance_scale, state.delta_t, state.delta_t_start, state.preview_every) == (3.0, 33, 90, 7)
    assert controls.snapshot() == state
    with pytest.raises(ValueError, match="unknown control"):
        controls.replace_defaults(speed=2)
