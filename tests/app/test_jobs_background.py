"""Stop hands back control at once (issue 27) and interrupted runs resume (issue 24): a stopped job exports in the
background while the next one starts, its export can be skipped, and a run a restart left behind continues from its
checkpoint, bit for bit."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lucid_app.app.interrupted import interrupted_runs, is_interrupted, last_record
from lucid_app.app.jobs import JobManager
from lucid_app.app.run_folders import JobError
from lucid_app.config import TrainConfig
from lucid_app.io.ply import read_gaussian_ply
from lucid_app.priors import load_prior
from lucid_app.train.controls import LiveControls
from lucid_app.train.events import DoneEvent, ExportEvent, StepEvent, TrainedEvent
from lucid_app.train.trainer import Trainer, initial_controls
from tests.helpers import WAIT_S, CountingLoader, job_config, tiny_config, wait_state


class ExportingTrainer:
    """Steps until stopped, then reports the end of training and exports ``FRAMES`` frames, one per gate opening;
    honours the skip-export control between frames."""

    FRAMES = 5
    started: list[ExportingTrainer] = []

    def __init__(self, config: TrainConfig, prior, *, run_dir: Path, controls: LiveControls, device) -> None:
        self.config, self.controls, self.run_dir = config, controls, run_dir
        self.frame_gate = threading.Semaphore(0)
        self.frames = 0
        ExportingTrainer.started.append(self)

    def run(self, on_event):
        step = 0
        while not self.controls.snapshot().stop and step < self.config.optim.steps:
            step += 1
            on_event(StepEvent(step=step, total_steps=self.config.optim.steps, losses={"total": 1.0}, t=1.0, s=0.0,
                               delta_t=1.0, grad_norm=1.0, guidance_scale=7.5, n_gaussians=1, seconds=0.01))
            time.sleep(0.01)
        status = "stopped" if step < self.config.optim.steps else "done"
        on_event(TrainedEvent(status=status, step=step, message=""))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "model.ply").write_bytes(b"ply")
        on_event(ExportEvent(stage="model.ply"))
        on_event(ExportEvent(stage="turntable", done=0, total=self.FRAMES))
        for _ in range(self.FRAMES):
            if self.controls.snapshot().skip_export:
                break
            assert self.frame_gate.acquire(timeout=WAIT_S)
            self.frames += 1
            on_event(ExportEvent(stage="turntable", done=self.frames, total=self.FRAMES))
        message = "export skipped" if self.controls.snapshot().skip_export else ""
        done = DoneEvent(status=status, step=step, message=message, files={})
        on_event(done)
        return done


@pytest.fixture
def exporting_jobs(tmp_path: Path):
    ExportingTrainer.started.clear()
    jobs = JobManager(tmp_path / "out", "cpu", loader=CountingLoader(), trainer_factory=ExportingTrainer).start()
    yield jobs
    for trainer in ExportingTrainer.started:
        trainer.controls.stop()
        trainer.controls.skip_export()
    jobs.close(timeout_s=5)


def _trainers(count: int) -> list[ExportingTrainer]:
    deadline = time.monotonic() + WAIT_S
    while len(ExportingTrainer.started) < count:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return ExportingTrainer.started


def test_a_stopped_job_exports_in_the_background_while_the_next_one_trains(exporting_jobs: JobManager) -> None:
    first = exporting_jobs.submit(job_config(steps=10_000), session="s")
    second = exporting_jobs.submit(job_config(steps=10_000), session="s")
    wait_state(exporting_jobs, first.id, "running")
    assert exporting_jobs.view(second.id).position == 1
    exporting_jobs.cancel(first.id)
    view = wait_state(exporting_jobs, first.id, "exporting")
    assert view.outcome == "stopped" and view.detached and not view.finished
    # Once model.ply is written the slot is free: the second job starts while the first is still exporting (no
    # turntable frame was released yet).
    wait_state(exporting_jobs, second.id, "running")
    exporter = _trainers(2)[0]
    assert exporter.frames == 0 and exporting_jobs.view(first.id).state == "exporting"
    assert exporting_jobs.background_export("s").id == first.id
    exporter.frame_gate.release()
    deadline = time.monotonic() + WAIT_S
    while exporting_jobs.view(first.id).progress != (1, ExportingTrainer.FRAMES):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # Controls of a job that no longer trains are refused; the export can be skipped.
    with pytest.raises(JobError):
        exporting_jobs.set_prompt(first.id, negative="blurry")
    exporting_jobs.skip_export(first.id)
    exporter.frame_gate.release()
    done = wait_state(exporting_jobs, first.id, "done")
    assert done.outcome == "stopped" and "export skipped" in done.message and exporter.frames < ExportingTrainer.FRAMES
    assert exporting_jobs.view(second.id).state == "running"
    assert first.run_dir not in exporting_jobs.active_run_dirs() and second.run_dir in exporting_jobs.active_run_dirs()


def test_close_waits_for_background_exports(exporting_jobs: JobManager) -> None:
    view = exporting_jobs.submit(job_config(steps=10_000), session="s")
    wait_state(exporting_jobs, view.id, "running")
    exporting_jobs.cancel(view.id)
    wait_state(exporting_jobs, view.id, "exporting")
    exporter = _trainers(1)[0]
    threading.Timer(0.3, lambda: [exporter.frame_gate.release() for _ in range(ExportingTrainer.FRAMES)]).start()
    exporting_jobs.close(timeout_s=WAIT_S)
    assert exporting_jobs.view(view.id).state == "done" and exporter.frames == ExportingTrainer.FRAMES


# ------------------------------------------------------------------ interrupted runs


def _interrupted_run(config: TrainConfig, run_dir: Path, stop_at: int) -> None:
    """A run stopped at ``stop_at`` whose final record is then dropped: what a kill after that checkpoint leaves."""
    controls = LiveControls(initial_controls(config))

    def stop(event: object) -> None:
        if isinstance(event, StepEvent) and event.step == stop_at:
            controls.stop()

    Trainer(config, load_prior(config.model.id, config.model), run_dir=run_dir, controls=controls).run(stop)
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    assert "status" in json.loads(lines[-1])
    metrics.write_text("\n".join(lines[:-1]) + "\n")


def test_an_interrupted_run_is_listed_for_its_owner_and_resumes_bit_for_bit(chair: str, tmp_path: Path) -> None:
    config = tiny_config(chair, steps=6)
    straight = tmp_path / "straight"
    Trainer(config, load_prior(config.model.id, config.model), run_dir=straight).run()
    outputs = tmp_path / "out"
    run_dir = outputs / "owner" / "20250101-000000-a-red-chair-abcd1234"
    _interrupted_run(config, run_dir, stop_at=3)
    assert is_interrupted(run_dir) and not is_interrupted(straight)
    assert last_record(straight / "metrics.jsonl")["status"] == "done"
    assert [r.name for r in interrupted_runs(outputs, "owner")] == [run_dir.name], "its owner's runs by name"
    assert interrupted_runs(outputs, "someone-else") == []
    assert interrupted_runs(outputs, "owner", active=[run_dir]) == []

    jobs = JobManager(outputs, "cpu").start()
    try:
        view = jobs.resume_run(run_dir, session="owner")
        assert view.resumed and view.state in ("queued", "running")
        with pytest.raises(JobError, match="already queued or running"):
            jobs.resume_run(run_dir, session="owner")
        view = wait_state(jobs, view.id, "done")
    finally:
        jobs.close(timeout_s=WAIT_S)
    assert view.outcome == "done" and [e.step for e in view.steps] == [4, 5, 6]
    assert not is_interrupted(run_dir)
    a, b = read_gaussian_ply(straight / "model.ply"), read_gaussian_ply(run_dir / "model.ply")
    for name in ("means", "sh_dc", "opacity_logits", "log_scales", "quats"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
