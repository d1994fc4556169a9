"""The JobManager's pluggable executor, with a fake one (no Ray): several jobs at once, the rest FIFO, controls
forwarded as versioned snapshots, a run that cannot start fails with its message."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from lucid_app.config import TrainConfig
from lucid_app.train.controls import ControlState
from lucid_app.train.events import DoneEvent
from lucid_app.app.executors import RunError
from lucid_app.app.job_host import JobStart
from lucid_app.app.jobs import JobManager

WAIT_S = 10.0


class FakeRun:
    def __init__(self, config: TrainConfig, fail: bool) -> None:
        self.config, self.fail = config, fail
        self.synced: list[ControlState] = []
        self.stopped = threading.Event()
        self.released = False

    def prepare(self) -> JobStart:
        if self.fail:
            raise RunError("the Ray worker on node-1 could not load the model: no such model")
        return JobStart(config=self.config)

    def train(self, on_event, on_prompt) -> None:
        assert self.stopped.wait(WAIT_S)
        on_event(DoneEvent(status="stopped", step=0, message="stopped", files={}))

    def sync(self, state: ControlState) -> None:
        self.synced.append(state)
        if state.stop:
            self.stopped.set()

    def change_prompt(self, changes):
        raise ValueError("not in this fake")

    def snapshot(self, timeout_s: float):
        raise RunError("not in this fake")

    def release(self) -> None:
        self.released = True


class FakeExecutor:
    slots = 2

    def __init__(self) -> None:
        self.runs: list[FakeRun] = []

    def open(self, config: TrainConfig, allow_demo: bool, run_dir: str, resume: bool = False) -> FakeRun:
        run = FakeRun(config, fail=config.prompt.text == "fails")
        self.runs.append(run)
        return run

    def close(self) -> None:
        pass


def _until(predicate, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_slots_jobs_run_at_once_the_rest_queue_fifo_and_controls_are_forwarded(tmp_path: Path) -> None:
    executor = FakeExecutor()
    jobs = JobManager(tmp_path, "cpu", executor=executor).start()
    try:
        ids = [jobs.submit(TrainConfig(), session="s").id for _ in range(3)]
        _until(lambda: len(executor.runs) == 2)
        states = [jobs.view(i).state for i in ids]
        assert states == ["running", "running", "queued"] and jobs.view(ids[2]).position == 2

        jobs.set_controls(ids[0], guidance_scale=11.0)
        jobs.pause(ids[0])
        jobs.resume(ids[0])
        synced = executor.runs[0].synced
        assert synced[-1].guidance_scale == 11.0 and not synced[-1].paused
        assert [s.version for s in synced] == sorted(s.version for s in synced)

        jobs.cancel(ids[0])  # the first slot frees: the queued job starts, in order
        _until(lambda: jobs.view(ids[0]).finished and len(executor.runs) == 3)
        assert jobs.view(ids[0]).outcome == "stopped" and executor.runs[0].released
        assert jobs.view(ids[2]).state == "running"
    finally:
        jobs.close(timeout_s=WAIT_S)
    assert all(run.released for run in executor.runs)
    assert all(jobs.view(i).finished for i in ids)


def test_a_run_that_cannot_start_fails_with_its_message(tmp_path: Path) -> None:
    from dataclasses import replace

    executor = FakeExecutor()
    jobs = JobManager(tmp_path, "cpu", executor=executor).start()
    try:
        config = TrainConfig()
        view = jobs.submit(replace(config, prompt=replace(config.prompt, text="fails")), session="s")
        _until(lambda: jobs.view(view.id).finished)
        final = jobs.view(view.id)
        assert final.state == "failed" and "could not load the model" in final.message
    finally:
        jobs.close(timeout_s=WAIT_S)
