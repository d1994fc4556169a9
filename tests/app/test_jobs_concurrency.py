"""The job manager under concurrency: pause/resume races, controls set while the model loads, a worker that
outlives close(), O(1) snapshots, and the bounded model cache."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
import weakref
from pathlib import Path

import pytest
import torch

from lucid_app.config import DEFAULT_MODEL, ModelConfig, TrainConfig
from lucid_app.train.controls import LiveControls
from lucid_app.train.events import DoneEvent, StepEvent
from lucid_app.app.jobs import JobManager
from lucid_app.app.model_cache import ModelCache
from lucid_app.app.run_folders import JobError
from lucid_app.train.prepare import resolve_config
from lucid_app.train.trainer import initial_controls
from tests.helpers import CountingLoader, FakePrior, GatedTrainer, WAIT_S, job_config, release_trainers, wait_state


def _step(k: int, total: int) -> StepEvent:
    return StepEvent(step=k, total_steps=total, losses={"total": 1.0}, t=500.0, s=420.0, delta_t=80.0, grad_norm=1.0,
                     guidance_scale=7.5, n_gaussians=10, seconds=0.01)


@pytest.fixture
def gated_jobs(tmp_path: Path):
    GatedTrainer.started.clear()
    GatedTrainer.free_running = False
    jobs = JobManager(tmp_path / "out", "cpu", loader=CountingLoader(missing=(DEFAULT_MODEL,)),
                      trainer_factory=GatedTrainer).start()
    yield jobs
    for trainer in GatedTrainer.started:
        trainer.controls.stop()
    jobs.close(timeout_s=5)


# ------------------------------------------------------------------ pause / resume of a job


def test_pause_and_resume_racing_keep_job_state_and_controls_in_step(gated_jobs: JobManager) -> None:
    """A resume that lands while a pause is under way: the job's state agrees with its controls at the end.

    Deterministic: the job's ``controls.pause`` is wrapped to run ``resume`` in another thread right after it and
    give it 0.2 s. Unlocked, the resume finishes in between and the pause then marks the running job ``paused``.
    """
    view = gated_jobs.submit(job_config(steps=3), session="s")
    wait_state(gated_jobs, view.id, "running")
    controls = gated_jobs._board.jobs[view.id].controls
    original = controls.pause
    others: list[threading.Thread] = []

    def pause_then_resume_elsewhere() -> None:
        original()
        other = threading.Thread(target=gated_jobs.resume, args=(view.id,))
        others.append(other)
        other.start()
        other.join(0.2)

    controls.pause = pause_then_resume_elsewhere  # type: ignore[method-assign]
    gated_jobs.pause(view.id)
    for other in others:
        other.join(5.0)
    after = gated_jobs.view(view.id)
    assert after.state == ("paused" if after.controls.paused else "running"), (after.state, after.controls)


# ------------------------------------------------------------------ demo fallback and the user's controls


class BlockingLoader(CountingLoader):
    """Blocks in the load of the default model until the test opens ``go``, then fails (→ the offline demo)."""

    def __init__(self) -> None:
        super().__init__(missing=(DEFAULT_MODEL,))
        self.loading, self.go = threading.Event(), threading.Event()

    def __call__(self, model, config, device):
        if model == DEFAULT_MODEL:
            self.loading.set()
            self.go.wait(WAIT_S)
        return super().__call__(model, config, device)


def test_demo_fallback_keeps_controls_the_user_changed_while_loading(tmp_path: Path) -> None:
    GatedTrainer.started.clear()
    GatedTrainer.free_running = False
    loader = BlockingLoader()
    jobs = JobManager(tmp_path / "out", "cpu", loader=loader, trainer_factory=GatedTrainer).start()
    try:
        # The request's starting values differ from the demo's, so the test sees which ones the fallback replaced.
        requested = resolve_config(None, "a snowman", None, None, [
            "optim.steps=1", "guidance.guidance_scale=20", "guidance.delta_t=33", "export.preview_every=7"])
        view = jobs.submit(requested, session="s")
        assert loader.loading.wait(WAIT_S)
        jobs.set_controls(view.id, guidance_scale=3.0)
        loader.go.set()
        view = jobs.view(view.id)
        while view.notice is None:
            view = jobs.wait(view.id, view.version, WAIT_S)
            assert not view.finished, view.message
        demo = initial_controls(resolve_config("demo", "a snowman", None, None, []))
        controls = view.controls
        assert controls.guidance_scale == 3.0  # the user's
        assert (controls.delta_t, controls.delta_t_start, controls.preview_every) == (
            demo.delta_t, demo.delta_t_start, demo.preview_every)  # the demo's
        jobs.cancel(view.id)
        wait_state(jobs, view.id, "done")
    finally:
        loader.go.set()
        jobs.close(timeout_s=5)


# ------------------------------------------------------------------ close() that times out


def _workers(baseline: set[threading.Thread]) -> list[threading.Thread]:
    """Live job-worker threads started since ``baseline`` was taken."""
    return [t for t in threading.enumerate() if t.name == "lucid-jobs" and t not in baseline and t.is_alive()]


def test_close_that_times_out_keeps_the_worker_and_start_refuses_a_second(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    class StubbornTrainer:
        """Ignores stop until the test releases it (a trainer stuck in a long step)."""

        def __init__(self, config: TrainConfig, prior, *, run_dir: Path, controls: LiveControls, device) -> None:
            pass

        def run(self, on_event):
            started.set()
            release.wait(WAIT_S)
            done = DoneEvent(status="stopped", step=0, message="stopped", files={})
            on_event(done)
            return done

    baseline = set(threading.enumerate())
    jobs = JobManager(tmp_path / "out", "cpu", loader=CountingLoader(), trainer_factory=StubbornTrainer).start()
    try:
        first = jobs.submit(job_config(), session="s")
        assert started.wait(WAIT_S)
        jobs.close(timeout_s=0.1)
        with pytest.raises(JobError, match="still finishing"):
            jobs.start()
        assert len(_workers(baseline)) == 1
    finally:
        release.set()
    wait_state(jobs, first.id, "done")
    deadline = time.monotonic() + WAIT_S
    while _workers(baseline) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _workers(baseline)

    # Once the old worker has ended, the manager starts again, with one worker.
    jobs.start()
    try:
        second = jobs.submit(job_config(), session="s")
        assert wait_state(jobs, second.id, "done").outcome == "stopped"
        assert len(_workers(baseline)) == 1
    finally:
        jobs.close(timeout_s=5)


# ------------------------------------------------------------------ snapshots are O(1)


def test_step_views_behave_like_tuples_and_stay_frozen() -> None:
    from lucid_app.app.step_log import StepLog

    log = StepLog()
    for k in range(1, 26):
        log.append(_step(k, 100))
    view = log.view()
    reference = tuple(_step(k, 100) for k in range(1, 26))
    log.append(_step(26, 100))  # after the snapshot: not in it
    assert len(view) == 25 and len(log) == 26
    for index in (0, 7, 24, -1, -25):
        assert view[index] == reference[index]
    for index in (25, -26):
        with pytest.raises(IndexError):
            view[index]
    for cut in (slice(-10, None), slice(None, None, 3), slice(None, None, -2), slice(3, -4, 2), slice(40, 50),
                slice(None)):
        assert tuple(view[cut]) == reference[cut] and len(view[cut]) == len(reference[cut])
    assert view[-10:][::2][-1] == reference[-10:][::2][-1]
    assert list(view) == list(reference) and view == reference and reference == view
    assert view[-1] == view[len(view) - 1] and reference[3] in view and bool(log.view()[:0]) is False


def test_view_is_o1_in_the_number_of_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 20,000 steps a snapshot neither renders the config again nor copies the steps; it keeps showing the
    steps it was taken at while more arrive."""
    n_steps = 20_000
    more, emitted, finished = threading.Event(), threading.Event(), threading.Event()

    class BurstTrainer:
        """Emits ``n_steps`` steps at once, then 5 more when the test asks, then ends."""

        def __init__(self, config: TrainConfig, prior, *, run_dir: Path, controls: LiveControls, device) -> None:
            pass

        def run(self, on_event):
            for k in range(1, n_steps + 1):
                on_event(_step(k, n_steps + 5))
            emitted.set()
            more.wait(WAIT_S)
            for k in range(n_steps + 1, n_steps + 6):
                on_event(_step(k, n_steps + 5))
            done = DoneEvent(status="done", step=n_steps + 5, message="", files={})
            on_event(done)
            finished.set()
            return done

    jobs = JobManager(tmp_path / "out", "cpu", loader=CountingLoader(), trainer_factory=BurstTrainer).start()
    try:
        job = jobs.submit(job_config(), session="s")
        assert emitted.wait(WAIT_S)
        import lucid_app.app.job_board as job_board

        renders: list[int] = []
        original_to_yaml = job_board.to_yaml
        monkeypatch.setattr(job_board, "to_yaml", lambda config: renders.append(1) or original_to_yaml(config))
        at_n = jobs.view(job.id)
        for _ in range(200):
            jobs.view(job.id)
        assert not renders, f"{len(renders)} config renders for 201 snapshots"

        # Memory kept alive by 50 snapshots: a copy of the steps is 8 bytes per step per snapshot (8 MB here).
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            held = [jobs.view(job.id) for _ in range(50)]
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(held) == 50 and grown < 1_000_000, f"50 snapshots hold {grown} bytes"

        more.set()
        assert finished.wait(WAIT_S)
        final = wait_state(jobs, job.id, "done")
        assert len(at_n.steps) == n_steps and at_n.last_step is not None and at_n.last_step.step == n_steps
        assert len(final.steps) == n_steps + 5 and final.last_step.step == n_steps + 5
        assert [e.step for e in final.steps[-10:]] == list(range(n_steps - 4, n_steps + 6))
        assert len(final.steps[::1000]) == 21
    finally:
        more.set()
        jobs.close(timeout_s=5)


# ------------------------------------------------------------------ the model cache is bounded


@pytest.mark.parametrize("max_models, loads", [(1, 3), (2, 2)])
def test_model_cache_keeps_the_most_recently_used(max_models: int, loads: int) -> None:
    loader = CountingLoader()
    cache = ModelCache(loader, max_models=max_models)
    a = ModelConfig(id="multiview:assets/demo")
    b = ModelConfig(id="multiview:assets/demo", lora_scale=0.5)  # another setting = another pipeline
    for model in (a, b, a):
        cache.get(model, torch.device("cpu"))
        assert len(cache) <= max_models
    assert cache.loads == loads == len(loader.calls)

    cache.max_models = 1  # lowering the bound evicts at once
    assert len(cache) == 1
    cache.get(a, torch.device("cpu"))  # the most recently used stayed
    assert cache.loads == loads
    with pytest.raises(ValueError, match="max_cached_models"):
        cache.max_models = 0


def test_finished_jobs_let_an_evicted_prior_go(tmp_path: Path) -> None:
    """With one cached model, running another setting unloads the first: nothing (a finished job) keeps it alive."""
    GatedTrainer.started.clear()
    GatedTrainer.free_running = True
    priors: list[weakref.ref] = []

    class RecordingLoader(CountingLoader):
        def __call__(self, model, config, device):
            prior = super().__call__(model, config, device)
            priors.append(weakref.ref(prior))
            return prior

    jobs = JobManager(tmp_path / "out", "cpu", loader=RecordingLoader(), trainer_factory=GatedTrainer,
                      max_cached_models=1).start()
    try:
        first = jobs.submit(job_config(steps=1), session="s")
        wait_state(jobs, first.id, "done")
        lora = resolve_config("demo", "a snowman", None, None, ["optim.steps=1", "model.lora_scale=0.5"])
        second = jobs.submit(lora, session="s")
        wait_state(jobs, second.id, "done")
        gc.collect()
        assert len(priors) == 2 and priors[0]() is None and isinstance(priors[1](), FakePrior)
        assert len(jobs.cache) == 1 and jobs.max_cached_models == 1
        jobs.max_cached_models = 2
        assert jobs.cache.max_models == 2
    finally:
        GatedTrainer.free_running = False
        jobs.close(timeout_s=5)


def test_close_cancels_the_queue_before_the_worker_can_take_a_job(gated_jobs: JobManager) -> None:
    """close() cancels the queue under the lock that sets the closing flag, so a queued job never starts (and never
    loads a model) during shutdown.

    Deterministic: ``cancel`` is wrapped to let the running job finish first and give the worker 0.5 s to take the
    queued one. Unlocked, it does; under the lock, the worker waits and finds the queue empty.
    """
    running = gated_jobs.submit(job_config(steps=2), session="s")
    wait_state(gated_jobs, running.id, "running")
    queued = gated_jobs.submit(job_config(steps=2), session="s")
    original = gated_jobs.cancel

    def finish_running_then_cancel(job_id: str):
        release_trainers(steps=2)
        deadline = time.monotonic() + 0.5
        while len(GatedTrainer.started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return original(job_id)

    gated_jobs.cancel = finish_running_then_cancel  # type: ignore[method-assign]
    gated_jobs.close(timeout_s=5)
    assert len(GatedTrainer.started) == 1
    assert gated_jobs.view(queued.id).state == "cancelled"
    wait_state(gated_jobs, running.id, "done")  # finished or stopped by close(), either way exported
