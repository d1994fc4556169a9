"""The job worker's model cache: a prior's weights load once per (model id, device, dtype, model settings), and at
most ``max_models`` priors stay loaded (least recently used leaves first), so new settings never pile models up on
the device.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from typing import Protocol

import torch

from lucid_app.config import ModelConfig
from lucid_app.config.devices import resolve_dtype
from lucid_app.priors import load_prior
from lucid_app.priors.base import DiffusionPrior

logger = logging.getLogger(__name__)


class PriorLoader(Protocol):
    def __call__(self, model: str, config: ModelConfig, device: torch.device | str) -> DiffusionPrior: ...


_CacheKey = tuple[str, str, str, ModelConfig]


class ModelCache:
    """Loaded priors keyed by (model id, device, dtype, the other model settings), at most ``max_models`` of them.

    Without a bound every distinct setting (another model, another ``lora_scale``) would leave one more pipeline on
    the device until it runs out of memory; the least recently used prior leaves first. A new prior enters once it
    has loaded, then the excess leaves: a load that fails (the offline demo's fallback tries the default model first)
    never throws out a working model, at the price of two models on the device while switching. Eviction only drops
    the cache's reference: a job that still holds the prior keeps using it, and its memory returns when the last
    holder lets go (finished jobs drop theirs).

    The worker thread loads, and at start-up :meth:`~lucid_app.app.jobs.JobManager.warm` may load the default model
    beside it: a :meth:`get` of a prior that another thread is loading waits for that load instead of loading it a
    second time (and tries itself only if that load failed).
    """

    def __init__(self, loader: PriorLoader = load_prior, max_models: int = 1) -> None:
        self._loader = loader
        self._priors: OrderedDict[_CacheKey, DiffusionPrior] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._max_models = _checked_max_models(max_models)
        # Keys being loaded now, each with the event its load sets when it ends (loaded or failed).
        self._loading: dict[_CacheKey, threading.Event] = {}
        self.loads = 0

    @property
    def max_models(self) -> int:
        """How many priors stay loaded; lowering it evicts at once."""
        return self._max_models

    @max_models.setter
    def max_models(self, value: int) -> None:
        with self._lock:
            self._max_models = _checked_max_models(value)
            evicted = self._evict_excess()
        _release(evicted)

    def __len__(self) -> int:
        with self._lock:
            return len(self._priors)

    def model_ids(self) -> list[str]:
        """The ids of the loaded priors, least recently used first."""
        with self._lock:
            return [key[0] for key in self._priors]

    def get(self, model: ModelConfig, device: torch.device) -> DiffusionPrior:
        """The prior for ``model`` on ``device``, loading it when it is not cached (or waiting for another thread's load
        of it).

        Raises:
            PriorError: the model cannot be loaded (the loader's message says what to do).
        """
        key = (model.id, str(device), str(resolve_dtype(model.dtype, device)), model)
        while True:
            with self._lock:
                cached = self._priors.get(key)
                if cached is not None:
                    self._priors.move_to_end(key)
                    return cached
                pending = self._loading.get(key)
                if pending is None:
                    done = self._loading[key] = threading.Event()
                    break
            pending.wait()
        try:
            logger.info("loading model %s on %s", model.id, device)
            prior = self._loader(model.id, model, device)
            with self._lock:
                self.loads += 1
                self._priors[key] = prior
                self._priors.move_to_end(key)
                evicted = self._evict_excess()
        finally:
            with self._lock:
                del self._loading[key]
            done.set()
        _release(evicted)
        return prior

    def keep_only(self, model: ModelConfig) -> None:
        """Unload every cached prior of a model other than ``model`` (a job worker process before its next job:
        what it holds beyond the job's own model would count against the job's memory cap)."""
        with self._lock:
            others = [key for key in self._priors if key[3] != model]
            for key in others:
                del self._priors[key]
        _release([key[0] for key in others])

    def _evict_excess(self) -> list[str]:
        """Drop the least recently used priors beyond ``max_models`` (the caller holds the lock); their model ids."""
        evicted = []
        while len(self._priors) > self._max_models:
            key, _ = self._priors.popitem(last=False)
            evicted.append(key[0])
        return evicted


def _checked_max_models(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_cached_models must be an integer >= 1, got {value!r}")
    return value


def _release(evicted: list[str]) -> None:
    """Return the memory of evicted priors: pipelines hold reference cycles, so collect before CUDA's allocator
    can hand their blocks back (nothing is freed while a running job still holds its prior)."""
    if not evicted:
        return
    logger.info("model cache full: unloaded %s", ", ".join(evicted))
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["ModelCache", "PriorLoader"]
