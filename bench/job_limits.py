"""No job can take the server down (issue 24): the refusal of an over-limit request, and the server while a capped
worker runs out of memory.

Starts the app in this process on a free local port, as ``app.py`` does (jobs in capped worker processes), with a
per-job limit of ``--limit-gb`` for the estimate and, to force what an estimate might miss, a worker cap of
``--cap-gb`` below it. Then, through ``gradio_client`` (one fresh client, i.e. session, per request):

1. refusals: ``--repeats`` times each, ``/generate`` with ``init.num_points=10000000`` and with
   ``model.multiview_resolution=1024`` (both within the schema; before, 6.8 GB and 3.8 GB + 3.8 GB), timed from
   the request (on a client already connected) to its one-line error (target ≤ 1 s);
2. the cap: ``/generate`` with ``model.multiview_resolution=128`` (estimated ~1.9 GB: under the limit, over the
   worker's cap), while this process samples its own resident size every 20 ms and times a ``/result`` round trip
   every 0.5 s (the server must stay responsive); then a small job, which must train in a fresh worker.

This process is the server plus its ``gradio_client`` clients, so its resident size bounds the server's (target
≤ 1.5 GB). Prints one JSON object (last line of stdout).

    python bench/job_limits.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="lucid-bench-gradio-"))

log = logging.getLogger("bench.job_limits")
REFUSED = {"points_10M": "init.num_points=10000000", "mv_res_1024": "model.multiview_resolution=1024"}
OVER_CAP = "model.multiview_resolution=128"
SMALL = "render.width=32\nrender.height=32\ninit.num_points=300\nexport.turntable_size=64\nexport.turntable_frames=8"


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def _client(url: str) -> object:
    from gradio_client import Client

    return Client(url, verbose=False)


def _generate(client: object, overrides: str, steps: int = 50) -> object:
    return client.submit(prompt="a red toy car", preset="demo", steps=steps, preview_every=0, export_mesh=False,
                         extra_overrides=overrides, api_name="/generate")


def refusal_seconds(url: str, overrides: str) -> tuple[float, str]:
    """Seconds from a ``/generate`` request (on a new client, already connected) to its error, and the error."""
    client = _client(url)
    started = time.perf_counter()
    job = _generate(client, overrides)
    try:
        job.result()
    except Exception as err:  # gradio_client's AppError carries the one line
        return time.perf_counter() - started, str(err)
    raise RuntimeError(f"{overrides!r} was not refused")


def final_state(job: object) -> dict:
    """The last ``job`` summary of a finished ``/generate`` stream."""
    outputs = job.outputs()
    job.result()
    return (job.outputs() or outputs)[-1][0]


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-gb", type=float, default=4.0)
    parser.add_argument("--cap-gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    from lucid_app.app.jobs import JobManager
    from lucid_app.app.process_executor import ProcessExecutor
    from lucid_app.train.budget import JobLimits
    from lucid_app.ui.layout import APP_CSS, build_demo
    from tests.app_harness import free_port

    outputs = Path(tempfile.mkdtemp(prefix="lucid-bench-out-"))
    executor = ProcessExecutor("cpu", max_job_gb=args.cap_gb)
    jobs = JobManager(outputs, "cpu", executor=executor, limits=JobLimits(max_gb=args.limit_gb, max_hours=2.0))
    jobs.start()
    demo = build_demo(jobs)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        allowed_paths=[str(outputs)], css=APP_CSS)
    url = f"http://127.0.0.1:{port}/"
    try:
        refusals = {}
        for name, overrides in REFUSED.items():
            times, message = [], ""
            for _ in range(args.repeats):
                seconds, message = refusal_seconds(url, overrides)
                times.append(seconds)
            refusals[name] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                              "message": message}
            log.info("%s: %s", name, refusals[name])

        rss_before = _status_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
        samples: list[int] = []
        round_trips: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(_status_bytes("VmRSS"))
                time.sleep(0.02)

        def ping() -> None:
            client = _client(url)
            while not done.is_set():
                started = time.perf_counter()
                _try_result(client)
                round_trips.append(time.perf_counter() - started)
                done.wait(0.5)

        threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=ping, daemon=True)]
        for thread in threads:
            thread.start()
        started = time.perf_counter()
        over = final_state(_generate(_client(url), OVER_CAP))
        over_s = time.perf_counter() - started
        done.set()
        for thread in threads:
            thread.join(10)
        peak = _status_bytes("VmHWM")
        small = final_state(_generate(_client(url), SMALL, steps=3))
        result = {
            "bench": "job_limits", "limit_gb": args.limit_gb, "cap_gb": args.cap_gb, "refusals": refusals,
            "refusal_max_s": max(r["max_s"] for r in refusals.values()), "refusal_target_s": 1.0,
            "over_cap": {"state": over["state"], "message": over["message"], "seconds": round(over_s, 1)},
            "server_rss_before_gb": round(rss_before / 1e9, 3),
            "server_rss_peak_gb": round(max(peak, *samples) / 1e9, 3), "server_rss_target_gb": 1.5,
            "round_trip_max_s": round(max(round_trips), 3) if round_trips else None,
            "round_trips": len(round_trips),
            "next_job": {"state": small["state"], "outcome": small["outcome"]},
            "load": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        demo.close()
        jobs.close(timeout_s=60)
        executor.close()
    print(json.dumps(result))
    return result


def _try_result(client: object) -> None:
    """A ``/result`` round trip (this session has no job: an error is its answer)."""
    try:
        client.predict("", api_name="/result")
    except Exception:  # the answer "This session has no job yet." comes back as an error
        pass


if __name__ == "__main__":
    main()
