"""Ray's overhead per job on this machine: starting a local instance, a task on a new worker (Python + torch +
lucid-app imports), a task on a warm worker, and an actor created and ready (what the app pays per job with --ray).

Run: ``python bench/ray_overhead.py``; prints one JSON object (docs/BENCHMARKS.md, "Scale out on Ray").
"""

from __future__ import annotations

import json
import os
import time

import ray


def importer() -> int:
    import lucid_app.train.trainer  # noqa: F401
    return os.getpid()

class Probe:
    def ping(self) -> int:
        import lucid_app.train.trainer  # noqa: F401
        return os.getpid()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
t0 = time.perf_counter()
ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False)
t_init = time.perf_counter() - t0
task = ray.remote(num_cpus=1)(importer)
t0 = time.perf_counter(); ray.get(task.remote()); t_cold = time.perf_counter() - t0
warm = []
for _ in range(5):
    t0 = time.perf_counter(); ray.get(task.remote()); warm.append(time.perf_counter() - t0)
actor_cls = ray.remote(num_cpus=1)(Probe)
actors = []
for _ in range(3):
    t0 = time.perf_counter(); a = actor_cls.remote(); ray.get(a.ping.remote()); actors.append(time.perf_counter() - t0)
    ray.kill(a)
ray.shutdown()
print(json.dumps({"ray_init_s": round(t_init, 2), "task_cold_s": round(t_cold, 2),
                  "task_warm_s_median": round(sorted(warm)[2], 4), "actor_create_s": [round(x, 2) for x in actors]}))
