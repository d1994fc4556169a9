"""The job manager: FIFO queue and positions, states, cancel, the model cache, fallback, stop exports, run folders."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from lucid_app.config import DEFAULT_MODEL
from lucid_app.app.jobs import JobManager
from lucid_app.app.preview_grid import tile_views
from lucid_app.app.run_folders import JobError, list_runs, resolve_run, session_folder
from lucid_app.train.prepare import resolve_config
from tests.app_harness import TINY_OVERRIDES
from tests.helpers import CountingLoader, GatedTrainer, WAIT_S, job_config, release_trainers, wait_state


@pytest.fixture
def fake_jobs(tmp_path: Path):
    GatedTrainer.started.clear()
    GatedTrainer.free_running = False
    loader = CountingLoader(missing=(DEFAULT_MODEL,))
    jobs = JobManager(tmp_path / "out", "cpu", loader=loader, trainer_factory=GatedTrainer)
    jobs.loader = loader
    yield jobs.start()
    for trainer in GatedTrainer.started:
        trainer.controls.stop()
    jobs.close(timeout_s=5)


def test_queue_is_fifo_with_positions(fake_jobs: JobManager) -> None:
    a = fake_jobs.submit(job_config("a snowman"), session="s1")
    wait_state(fake_jobs, a.id, "running")
    b = fake_jobs.submit(job_config("a red toy car"), session="s2")
    c = fake_jobs.submit(job_config("a potted flower"), session="s3")
    assert (fake_jobs.view(b.id).state, fake_jobs.view(b.id).position) == ("queued", 1)
    assert fake_jobs.view(c.id).position == 2

    release_trainers()
    wait_state(fake_jobs, a.id, "done")
    wait_state(fake_jobs, b.id, "running")
    assert fake_jobs.view(c.id).position == 1
    release_trainers(trainers=2)
    wait_state(fake_jobs, b.id, "done")
    release_trainers(trainers=3)
    for job in (a, b, c):
        view = wait_state(fake_jobs, job.id, "done")
        assert view.outcome == "done" and len(view.steps) == 2 and view.position == 0
    assert [t.config.prompt.text for t in GatedTrainer.started] == ["a snowman", "a red toy car", "a potted flower"]


def test_cancel_queued_job_and_session(fake_jobs: JobManager) -> None:
    a = fake_jobs.submit(job_config(steps=3), session="s1")
    wait_state(fake_jobs, a.id, "running")
    b = fake_jobs.submit(job_config(), session="s2")
    c = fake_jobs.submit(job_config(), session="s3")
    cancelled = fake_jobs.cancel(b.id)
    assert cancelled.state == "cancelled"
    assert fake_jobs.view(c.id).position == 1
    with pytest.raises(JobError):
        fake_jobs.set_controls(b.id, guidance_scale=3.0)

    # Closing session s1 stops its running job (which exports, so it ends "done"/"stopped"); s3 runs next.
    assert fake_jobs.cancel_session("s1") == 1
    assert wait_state(fake_jobs, a.id, "done").outcome == "stopped"
    wait_state(fake_jobs, c.id, "running")
    # "running" is set before the model loads and the trainer exists: wait for c's trainer.
    deadline = time.monotonic() + WAIT_S
    while len(GatedTrainer.started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # room for a wrongly started third trainer to show
    assert len(GatedTrainer.started) == 2  # b never started


def test_pause_resume_and_live_controls(fake_jobs: JobManager) -> None:
    a = fake_jobs.submit(job_config(steps=4), session="s1")
    wait_state(fake_jobs, a.id, "running")
    assert fake_jobs.pause(a.id).state == "paused"
    fake_jobs.set_controls(a.id, guidance_scale=12.0)
    assert fake_jobs.resume(a.id).state == "running"
    release_trainers()
    view = wait_state(fake_jobs, a.id, "done")
    assert view.steps[-1].guidance_scale == 12.0
    b = fake_jobs.submit(job_config(), session="s1")
    with pytest.raises(ValueError, match="unknown control"):
        fake_jobs.set_controls(b.id, speed=2)


def test_model_cache_loads_once_and_demo_fallback(fake_jobs: JobManager) -> None:
    GatedTrainer.free_running = True
    views = [fake_jobs.submit(job_config(steps=1), session="s1") for _ in range(3)]
    for view in views:
        wait_state(fake_jobs, view.id, "done")
    assert len(fake_jobs.loader.calls) == 1 and fake_jobs.loader.calls[0].startswith("multiview:")
    assert fake_jobs.cache.loads == 1

    # The default SD model has no weights here: the demo runs instead, with a notice, from the same cache entry.
    GatedTrainer.free_running = False
    sd = fake_jobs.submit(resolve_config(None, "a snowman", None, None, ["optim.steps=1"]), session="s2")
    view = fake_jobs.view(sd.id)
    while view.notice is None:
        view = fake_jobs.wait(sd.id, view.version, WAIT_S)
        assert not view.finished, view.message
    assert "offline demo" in view.notice and "multiview:" in view.config_yaml and view.prompt == "a snowman"
    assert fake_jobs.cache.loads == 1 and fake_jobs.loader.calls[-1] == DEFAULT_MODEL
    fake_jobs.cancel(sd.id)
    assert wait_state(fake_jobs, sd.id, "done").outcome == "stopped"


def test_unknown_model_fails_with_message(tmp_path: Path) -> None:
    loader = CountingLoader(missing=("someone/missing-model",))
    jobs = JobManager(tmp_path, "cpu", loader=loader, trainer_factory=GatedTrainer).start()
    try:
        view = jobs.submit(job_config(model="someone/missing-model"), session="s")
        view = wait_state(jobs, view.id, "failed")
        assert "no weights for someone/missing-model" in view.message
    finally:
        jobs.close(timeout_s=5)


def test_stop_exports_real_run(tmp_path: Path) -> None:
    """A real (tiny) training run on the offline demo: stop mid-run → model.ply and turntable.mp4 exist."""
    jobs = JobManager(tmp_path / "out", "cpu").start()
    try:
        config = resolve_config("demo", "a snowman", None, None, ["optim.steps=50", "export.preview_every=1",
                                                                  *TINY_OVERRIDES])
        view = jobs.submit(config, session="sess-1")
        while len(view.steps) < 2:
            view = jobs.wait(view.id, view.version, WAIT_S)
            assert not view.finished, view.message
        jobs.cancel(view.id)
        view = wait_state(jobs, view.id, "done")
    finally:
        jobs.close()
    assert view.outcome == "stopped" and view.preview is not None and view.preview.dtype == np.uint8
    assert Path(view.files["ply"]).is_file() and Path(view.files["video"]).is_file()
    assert view.run_dir.parent == (tmp_path / "out" / "sess-1").resolve()
    runs = list_runs(tmp_path / "out")
    assert [r.name for r in runs] == [f"sess-1/{view.run_dir.name}"] and runs[0].prompt == "a snowman"
    assert resolve_run(tmp_path / "out", runs[0].name) == view.run_dir


def test_resolve_run_stays_inside_outputs(tmp_path: Path) -> None:
    run = tmp_path / "out" / "s" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "config.yaml").write_text("seed: 0\n")
    assert resolve_run(tmp_path / "out", "s/r") == run.resolve()
    for bad in ("../secret", str(tmp_path / "secret"), "", ".", "s", "s/../../secret"):
        with pytest.raises(JobError):
            resolve_run(tmp_path / "out", bad)


def test_helpers() -> None:
    grid = tile_views(np.zeros((4, 8, 6, 3), dtype=np.uint8))
    assert grid.shape == (16, 12, 3)
    assert tile_views(np.zeros((3, 8, 8, 3), dtype=np.uint8))[8:, 8:].min() == 255
    assert tile_views(np.zeros((4, 8, 6, 3), dtype=np.uint8), min_size_px=20).shape == (48, 36, 3)
    assert session_folder("ab/../c d") == "abcd" and session_folder("") == "anonymous"
