"""Jobs in capped worker processes (issue 24): the app's controls cross the process boundary, and a job that runs out
of memory fails alone with one line while the server goes on (tiny real runs on the multi-view prior)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from lucid_app.app.jobs import JobManager
from lucid_app.app.job_board import JobView
from lucid_app.app.job_worker import is_memory_error
from lucid_app.app.process_executor import ProcessExecutor
from tests.helpers import tiny_config

WAIT_S = 240.0
pytestmark = pytest.mark.slow


def _until(jobs: JobManager, view: JobView, done: object) -> JobView:
    deadline = time.monotonic() + WAIT_S
    while not done(view):
        assert time.monotonic() < deadline, f"timed out in state {view.state}: {view.message}"
        assert not view.finished or done(view), view.message
        view = jobs.wait(view.id, view.version, timeout_s=1.0)
    return view


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_controls_prompts_snapshots_and_stop_cross_to_the_worker(chair: str, tmp_path: Path) -> None:
    executor = ProcessExecutor("cpu", max_job_gb=2.0)
    jobs = JobManager(tmp_path / "out", "cpu", executor=executor).start()
    try:
        config = tiny_config(chair, steps=2000, extra=("export.preview_every=1", "export.turntable_frames=4"))
        view = jobs.submit(config, session="s")
        view = _until(jobs, view, lambda v: len(v.steps) >= 2 and v.preview is not None)
        assert os.getpid() not in executor.worker_pids()
        # The prior's evaluations are counted in the worker and reach the job's view with its steps (the A/B table).
        assert view.prior_samples >= 2 * config.cameras.batch_size, "ISM evaluates the prior several times a view"
        jobs.set_controls(view.id, guidance_scale=12.0)
        change = jobs.set_prompt(view.id, negative="blurry")
        assert change.negative == "blurry" and jobs.view(view.id).controls.prompt.prompt.negative == "blurry"
        snapshot = jobs.live_gaussians(view.id, timeout_s=WAIT_S)
        assert snapshot.step >= 2 and snapshot.gaussians.count > 0
        paused = jobs.pause(view.id)
        assert paused.state == "paused"
        steps = len(jobs.view(view.id).steps)
        time.sleep(1.0)
        assert len(jobs.view(view.id).steps) <= steps + 1, "a paused worker stops within a step"
        jobs.resume(view.id)
        start = len(jobs.view(view.id).steps)
        view = _until(jobs, jobs.view(view.id), lambda v: len(v.steps) >= start + 2)
        jobs.cancel(view.id)
        view = _until(jobs, view, lambda v: v.finished)
    finally:
        jobs.close(timeout_s=WAIT_S)
        executor.close()
    assert view.state == "done" and view.outcome == "stopped" and view.detached, view.message
    assert Path(view.files["ply"]).is_file() and Path(view.files["video"]).is_file()
    records = [json.loads(line) for line in (view.run_dir / "metrics.jsonl").read_text().splitlines()]
    control = next(r for r in records if "controls" in r and "guidance_scale" in r["controls"])
    assert control["controls"]["guidance_scale"] == 12.0
    assert all(r["guidance_scale"] == 12.0 for r in records if "loss_total" in r and r["step"] >= control["step"])
    assert any(r.get("prompt_change", {}).get("negative") == "blurry" for r in records)


def test_the_waiting_worker_warms_the_model_the_first_job_uses(chair: str, tmp_path: Path) -> None:
    """The app's start-up warm-up (issue 27) with the worker processes of issue 24: the waiting worker loads the
    model before any job, the job uses it, and the worker keeps it for the next job."""
    executor = ProcessExecutor("cpu", max_job_gb=2.0)
    jobs = JobManager(tmp_path / "out", "cpu", executor=executor).start()
    try:
        config = tiny_config(chair, steps=2)
        assert jobs.warm(config.model) is None, "the load runs in the worker, not on a thread of the server"
        deadline = time.monotonic() + WAIT_S
        while executor.idle_models() != [[config.model.id]]:
            assert time.monotonic() < deadline, executor.idle_models()
            time.sleep(0.2)
        view = _until(jobs, jobs.submit(config, session="s"), lambda v: v.finished)
        assert view.state == "done" and view.prior_samples > 0, view.message
        deadline = time.monotonic() + WAIT_S
        while not executor.idle_models():  # the worker is handed back just after the job's last event
            assert time.monotonic() < deadline, "the worker never came back"
            time.sleep(0.1)
        assert executor.idle_models() == [[config.model.id]], "kept for the next job"
    finally:
        jobs.close(timeout_s=WAIT_S)
        executor.close()


def test_a_job_out_of_memory_fails_alone_and_the_next_job_runs(chair: str, tmp_path: Path) -> None:
    """A 0.25 GB cap: the multi-view prior at 1024 px needs ~0.7 GB for 8 images. The job fails with one line, the
    server's memory does not grow, the worker is replaced and the next job trains; a killed worker fails its job."""
    executor = ProcessExecutor("cpu", max_job_gb=0.25)
    jobs = JobManager(tmp_path / "out", "cpu", executor=executor).start()  # no limits: the cap must catch it
    try:
        rss_before = _rss_bytes()
        big = jobs.submit(tiny_config(chair, extra=("model.multiview_resolution=1024",)), session="s")
        big = _until(jobs, big, lambda v: v.finished)
        assert big.state == "failed" and "ran out of memory" in big.message and "--max-job-gb" in big.message
        assert "\n" not in big.message
        assert _rss_bytes() - rss_before < 100e6, "the server's own memory stayed put"

        small = jobs.submit(tiny_config(chair, steps=3), session="s")
        small = _until(jobs, small, lambda v: v.finished)
        assert small.state == "done" and small.outcome == "done", small.message

        doomed = jobs.submit(tiny_config(chair, steps=20000), session="s")
        doomed = _until(jobs, doomed, lambda v: len(v.steps) >= 1)
        for pid in executor.worker_pids():
            os.kill(pid, signal.SIGKILL)
        doomed = _until(jobs, doomed, lambda v: v.finished)
        assert doomed.state == "failed" and "ended unexpectedly" in doomed.message
    finally:
        jobs.close(timeout_s=WAIT_S)
        executor.close()


def test_allocation_failures_are_told_apart() -> None:
    assert is_memory_error(MemoryError())
    assert is_memory_error(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                        "memory: you tried to allocate 7600000000 bytes. Error code 12"))
    assert not is_memory_error(RuntimeError("shape mismatch"))
