"""A small local Ray instance for the tests marked ``ray`` (one per test module: start it with a module fixture).

Sized for a shared CI machine: 2 CPU slots, a 200 MB object store, no dashboard; shut down when the module ends.
Its workers run at the tests' own priority: Ray starts them at niceness 15, and on a busy machine (other processes at
niceness 0) they got almost no CPU and a test waited for minutes. Skip these tests locally with
``pytest -m 'not ray'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

RAY_CPUS = 2
RAY_OBJECT_STORE_MB = 200


@contextmanager
def local_ray() -> Iterator[object]:
    """Start (or reuse) a local Ray; yields the ``ray`` module and shuts Ray down on exit if it started it."""
    import ray

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_worker_niceness", "0")  # read by the raylet this starts (Ray's config from RAY_*)
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=RAY_CPUS, object_store_memory=RAY_OBJECT_STORE_MB * 1024 * 1024,
                 include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
