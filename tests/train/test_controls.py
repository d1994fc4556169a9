"""Thread-safe live controls."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import pytest
import torch

from lucid_app.train.controls import ControlState, LiveControls


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


# ---------------------------------------------------------------------------------------------- control schedule


def test_control_changes_are_recorded_once_and_merged_by_step() -> None:
    from lucid_app.config import ControlChange
    from lucid_app.train.controls import record_control_change, scheduled_control_change

    before = ControlState(guidance_scale=7.5, delta_t=80, delta_t_start=100, preview_every=50)
    after = ControlState(guidance_scale=12.0, delta_t=80, delta_t_start=100, preview_every=7)
    schedule, change = record_control_change((), 4, before, after)
    # preview_every is not recorded
    assert change == ControlChange(step=4, guidance_scale=12.0) and schedule == (change,)
    assert (scheduled_control_change(schedule, 4) == {"guidance_scale": 12.0}
            and scheduled_control_change(schedule, 5) == {})
    # A replay of the same change keeps the very same schedule; another value at that step merges into its entry.
    assert record_control_change(schedule, 4, before, after)[0] is schedule
    merged, _ = record_control_change(schedule, 4, before, ControlState(12.0, 40, 100, 50))
    assert merged == (ControlChange(step=4, guidance_scale=12.0, delta_t=40),)
    assert record_control_change(schedule, 9, after, after) == (schedule, None)


@pytest.mark.parametrize("bad, message", [
    ({"guidance_scale": 1001}, "guidance_scale: must be <= 1000"), ({"delta_t": 0}, "delta_t: must be >= 1"),
    ({"delta_t_start": 1000}, "delta_t_start: must be <= 999"), ({"delta_t": 2.5}, "delta_t: expected an integer"),
    ({"preview_every": -1}, "preview_every: must be >= 0"), ({"guidance_scale": float("nan")}, "finite"),
])
def test_live_values_stay_within_the_configs_bounds(bad: dict, message: str) -> None:
    """The live controls check against the schema's own bounds (GuidanceConfig, ExportConfig), so every live value
    can be recorded in config.yaml and loaded back."""
    with pytest.raises(ValueError, match=message):
        make().update(**bad)


def test_live_values_are_typed_as_the_schema_types_them() -> None:
    state = make().update(guidance_scale=10, delta_t=60.0)
    assert state.guidance_scale == 10.0 and isinstance(state.guidance_scale, float)
    assert state.delta_t == 60 and isinstance(state.delta_t, int)


def _chair_config(tmp_path, steps: int, extra: tuple[str, ...] = ()):
    from lucid_app.config import TrainConfig, apply_overrides
    from tests.helpers import write_object

    root = tmp_path / "chair"
    if not root.exists():
        write_object(root, "a red chair", [(a, 80.0) for a in range(-180, 180, 45)], seed=0, size=16)
    return apply_overrides(TrainConfig(), [
        f"model.id=multiview:{root}", "model.multiview_resolution=16", "render.width=16", "render.height=16",
        "cameras.batch_size=2", "init.num_points=150", f"optim.steps={steps}", "prompt.text=a red chair",
        "prompt.negative=", "guidance.warmup_steps=4", "export.turntable_frames=2", "export.turntable_size=16",
        "export.eval_views=1", "export.preview_every=0", "export.checkpoint_every=0", "export.checkpoint_every_s=0",
        *extra,
    ])


def test_a_run_with_slider_changes_replays_exactly_from_its_config_yaml(tmp_path) -> None:
    from lucid_app.config import ControlChange, from_yaml
    from lucid_app.train.events import StepEvent
    from lucid_app.priors import load_prior
    from lucid_app.train.trainer import Trainer, initial_controls

    config = _chair_config(tmp_path, steps=6)
    prior = load_prior(config.model.id, config.model)
    controls = LiveControls(initial_controls(config))
    live_steps: list[StepEvent] = []

    def slide(event: object) -> None:
        if isinstance(event, StepEvent):
            live_steps.append(event)
            if event.step == 2:
                controls.update(guidance_scale=20.0, delta_t=10)
            if event.step == 4:
                controls.update(guidance_scale=3.0)

    live = Trainer(config, prior, run_dir=tmp_path / "live", controls=controls)
    live.run(slide)
    recorded = from_yaml((tmp_path / "live" / "config.yaml").read_text())
    assert recorded.control_schedule == (ControlChange(step=3, guidance_scale=20.0, delta_t=10),
                                         ControlChange(step=5, guidance_scale=3.0))
    replay_steps: list[StepEvent] = []
    replay = Trainer(recorded, prior, run_dir=tmp_path / "replay")
    replay.run(lambda e: replay_steps.append(e) if isinstance(e, StepEvent) else None)
    assert [(e.guidance_scale, e.delta_t, e.losses) for e in replay_steps] == [
        (e.guidance_scale, e.delta_t, e.losses) for e in live_steps]
    for name, value in live.gaussians.params.items():
        assert torch.equal(value, replay.gaussians.params[name]), name
    # The replay records nothing new: its config.yaml holds the same schedule.
    assert from_yaml((tmp_path / "replay" / "config.yaml").read_text()).control_schedule == recorded.control_schedule


def test_previews_come_after_step_one_then_by_steps_and_by_time(tmp_path, monkeypatch) -> None:
    from lucid_app.train import outputs as train_outputs
    from lucid_app.train.events import PreviewEvent
    from lucid_app.priors import load_prior
    from lucid_app.train.outputs import PREVIEW_FIRST_SIZE_PX, PREVIEW_SIZE_PX
    from lucid_app.train.trainer import Trainer

    config = _chair_config(tmp_path, steps=7, extra=("export.preview_every=5",))
    prior = load_prior(config.model.id, config.model)
    events: list = []
    Trainer(config, prior).run(events.append)
    previews = [e for e in events if isinstance(e, PreviewEvent)]
    assert [p.step for p in previews] == [1, 5]
    assert previews[0].images.shape[1:] == (PREVIEW_FIRST_SIZE_PX, PREVIEW_FIRST_SIZE_PX, 3)
    assert previews[1].images.shape[1:] == (PREVIEW_SIZE_PX, PREVIEW_SIZE_PX, 3)
    # With no time between previews required, every step previews (the wall-clock rule); preview_every=0: none.
    monkeypatch.setattr(train_outputs, "PREVIEW_INTERVAL_S", 0.0)
    monkeypatch.setattr(train_outputs, "PREVIEW_COST_RATIO", 0.0)
    events.clear()
    Trainer(config, prior).run(events.append)
    assert [e.step for e in events if isinstance(e, PreviewEvent)] == list(range(1, 8))
    events.clear()
    Trainer(_chair_config(tmp_path, steps=3), prior).run(events.append)
    assert not [e for e in events if isinstance(e, PreviewEvent)]


def test_snapshots_of_the_live_gaussians_are_taken_between_steps(tmp_path) -> None:
    from lucid_app.train.events import ExportEvent, StepEvent
    from lucid_app.priors import load_prior
    from lucid_app.train.trainer import Trainer

    config = _chair_config(tmp_path, steps=5, extra=("export.mesh=true", "export.mesh_resolution=16"))
    prior = load_prior(config.model.id, config.model)
    trainer = Trainer(config, prior, run_dir=tmp_path / "run")
    futures, stages, turntable = [], [], []

    def on_event(event: object) -> None:
        if isinstance(event, StepEvent) and event.step == 2:
            futures.append(trainer.request_snapshot())  # answered before step 3 starts
        if isinstance(event, StepEvent) and event.step == 3:
            assert futures[0].done(), "the snapshot waited for more than one step"
        if isinstance(event, ExportEvent):
            stages.append(event.stage)
            if event.stage == "turntable":
                turntable.append((event.done, event.total))

    trainer.run(on_event)
    snapshot = futures[0].result(timeout=0)
    assert snapshot.step == 2 and snapshot.gaussians.means.shape[1] == 3
    assert "prompt:" in snapshot.config_yaml
    assert stages[0] == "model.ply" and "turntable" in stages and stages[-1] == "mesh"
    # The turntable's progress counts frames from 0 up to all of them, never past.
    frames = config.export.turntable_frames  # over all rings together
    done = [d for d, _ in turntable]
    assert done[0] == 0 and done[-1] == frames and done == sorted(done) and {t for _, t in turntable} == {frames}
    late = trainer.request_snapshot()
    trainer.serve_snapshots()
    assert late.result(timeout=0).step == 5
