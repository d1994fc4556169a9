"""Thread-safe live controls."""

from __future__ import annotations

import threading
import time

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
