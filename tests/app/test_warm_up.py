"""The app's start-up warm-up (issue 27): the default model loads in the background, and a job that asks for it
meanwhile waits for that load instead of loading it a second time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from lucid_app.app.jobs import JobManager
from lucid_app.app.model_cache import ModelCache
from lucid_app.config import ModelConfig
from lucid_app.priors.base import PriorError


class SlowLoader:
    """Counts its loads; each takes ``seconds``; the first ``failures`` raise PriorError."""

    def __init__(self, seconds: float, failures: int = 0) -> None:
        self.seconds, self.failures, self.calls = seconds, failures, 0
        self.lock = threading.Lock()

    def __call__(self, model: str, config: ModelConfig, device: object) -> object:
        with self.lock:
            self.calls += 1
            fail = self.calls <= self.failures
        time.sleep(self.seconds)
        if fail:
            raise PriorError("not downloaded")
        return object()


def test_a_get_during_the_warm_up_waits_for_it_and_loads_once(tmp_path: Path) -> None:
    loader = SlowLoader(0.3)
    jobs = JobManager(tmp_path, "cpu", loader=loader)
    model = ModelConfig(id="multiview:x")
    thread = jobs.warm(model)
    time.sleep(0.05)  # the warm-up's load has begun
    started = time.perf_counter()
    prior = jobs.cache.get(model, jobs.device)
    waited = time.perf_counter() - started
    thread.join(5)
    assert loader.calls == 1 and jobs.cache.loads == 1
    assert jobs.cache.get(model, jobs.device) is prior
    assert 0.1 < waited < 1.0, "the job waited for the warm-up's load, no longer"


def test_a_failed_warm_up_is_logged_and_the_job_loads_itself(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loader = SlowLoader(0.05, failures=1)
    jobs = JobManager(tmp_path, "cpu", loader=loader)
    model = ModelConfig(id="owner/missing")
    jobs.warm(model).join(5)
    assert "warm-up: model owner/missing not loaded: not downloaded" in caplog.text
    jobs.cache.get(model, jobs.device)
    assert loader.calls == 2 and len(jobs.cache) == 1


def test_concurrent_gets_of_one_model_load_it_once() -> None:
    loader = SlowLoader(0.2)
    cache = ModelCache(loader)
    model = ModelConfig(id="multiview:y")
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(model, torch.device("cpu")))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert loader.calls == 1 and len({id(r) for r in results}) == 1


def test_a_job_worker_keeps_only_its_jobs_model() -> None:
    """Before a job, a worker process drops every model but the job's (what it holds beyond the job's own model
    would count against the job's memory cap); the job's own stays loaded."""
    loader = SlowLoader(0.0)
    cache = ModelCache(loader, max_models=2)
    kept, other = ModelConfig(id="multiview:kept"), ModelConfig(id="multiview:other")
    prior = cache.get(kept, torch.device("cpu"))
    cache.get(other, torch.device("cpu"))
    assert cache.model_ids() == ["multiview:kept", "multiview:other"]
    cache.keep_only(kept)
    assert cache.model_ids() == ["multiview:kept"] and cache.get(kept, torch.device("cpu")) is prior
    assert loader.calls == 2
