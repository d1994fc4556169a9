"""The first minutes of a person on a fresh server (issue 27): click → first preview, click → a recognisable result,
Stop → control back, and the stopped run's export, through the app's API on the offline demo.

A cold server, started as ``app.py`` starts it (a job manager on the CPU whose jobs train in a capped worker process,
the default model warming in the waiting worker, the page served; ``--in-process`` trains in the server's process);
Generate is pressed at once through ``gradio_client`` with the form as it opens (the demo preset, "a red toy car",
mesh export on). Measured:

1. **click → first preview**: the first streamed update that carries a preview image.
2. **click → recognisable**: the first time the run's live Gaussians (``JobManager.live_gaussians``, taken beside
   training every ``--score-every-s``) reach ``--psnr-db`` (20 dB) mean PSNR at the dataset's held-out test cameras
   (``assets/demo``'s ``transforms_test.json``, every ``--view-stride``-th view, scored as ``bench quality`` scores).
3. **Stop → control back**: Stop is pressed then (or at ``--max-minutes``), and at once a second Generate; the time
   until that second job trains (what a person waits for before the app does what they asked).
4. **the stopped run's export**, in the background: from Stop, and from the run's turn to ``exporting``, to its end
   (model, turntable, views, mesh).

``--no-warm`` starts the server without the warm-up, for comparison. Prints one JSON object (last line of stdout).

    python bench/first_minutes.py                 # the demo, warm-up as app.py does
    python bench/first_minutes.py --no-warm       # the same without the warm-up
    python bench/first_minutes.py --in-process    # jobs in the server's process (app.py --in-process)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("bench.first_minutes")
TERMINAL = ("done", "failed", "cancelled")


class Scorer:
    """PSNR of a job's live Gaussians at the dataset's test cameras (a subset), as ``bench quality`` scores."""

    def __init__(self, dataset: str, prompt: str, view_stride: int) -> None:
        import torch

        from lucid_app.bench.quality import prepare_quality
        from lucid_app.render import make_renderer

        setup = prepare_quality(dataset, prompt)
        obj = setup.object
        keep = torch.arange(0, len(obj.test_cameras), view_stride)
        self.cameras = obj.test_cameras[keep]
        self.targets = obj.test_images[keep]
        self.renderer = make_renderer("torch", torch.device("cpu"))

    def psnr(self, snapshot: Any) -> float:
        from lucid_app.bench.quality import render_views, score_views
        from lucid_app.config import OptimConfig
        from lucid_app.scene.gaussians import GaussianModel

        splats = GaussianModel.from_raw(snapshot.gaussians, OptimConfig()).splats()
        return score_views(render_views(self.renderer, splats, self.cameras), self.targets)[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from gradio_client import Client

    from app import DEFAULT_MAX_JOB_HOURS, default_max_job_gb, default_model
    from lucid_app.app.model_registry import default_registry
    from lucid_app.config.devices import resolve_device
    from lucid_app.train.budget import JobLimits
    from tests.app_harness import launch_app  # sets Gradio's environment before gradio is imported

    load_before = os.getloadavg()
    scorer = Scorer(args.dataset, args.prompt, args.view_stride)
    started = time.perf_counter()
    # The executor and limits app.py builds by default (a capped worker process per job), or this process.
    max_gb = default_max_job_gb()
    executor = None
    if not args.in_process:
        from lucid_app.app.process_executor import ProcessExecutor

        executor = ProcessExecutor(args.device, max_job_gb=max_gb)
    limits = JobLimits(max_gb=max_gb, max_hours=DEFAULT_MAX_JOB_HOURS, device_type=resolve_device(args.device).type)
    demo, jobs, url = launch_app(Path(tempfile.mkdtemp(prefix="first-minutes-")), args.device, executor=executor,
                                 limits=limits)
    warm = jobs.warm(default_model(default_registry(), "")) if args.warm else None
    report: dict[str, Any] = {"bench": "first_minutes", "warm_up": args.warm, "in_process": args.in_process,
                              "prompt": args.prompt, "server_start_s": round(time.perf_counter() - started, 2)}
    try:
        client = Client(url, verbose=False)
        clicked = time.perf_counter()
        job = client.submit(prompt=args.prompt, extra_overrides="", api_name="/generate")
        first_preview = recognisable = None
        job_id = ""
        last_score = 0.0
        scores: list[list[float]] = []
        for out in job:
            summary, preview = out[0], out[3]
            job_id = job_id or summary.get("id", "")
            now = time.perf_counter()
            if first_preview is None and isinstance(preview, str):
                first_preview = now - clicked
                report.update(click_to_first_preview_s=round(first_preview, 2),
                              first_preview_step=summary.get("preview_step"))
                log.warning("first preview after %.2f s (step %s)", first_preview, summary.get("preview_step"))
            training = summary.get("state") == "running" and summary.get("step", 0) >= 1
            if training and now - last_score >= args.score_every_s:
                snapshot = jobs.live_gaussians(job_id)
                value = scorer.psnr(snapshot)
                last_score = time.perf_counter()
                scores.append([snapshot.step, round(value, 2), round(last_score - clicked, 1)])
                log.warning("step %d: PSNR %.2f dB at %.0f s", snapshot.step, value, last_score - clicked)
                if value >= args.psnr_db and recognisable is None:
                    recognisable = last_score - clicked
                    report.update(click_to_recognisable_s=round(recognisable, 1), recognisable_step=snapshot.step)
            if recognisable is not None or now - clicked > args.max_minutes * 60 or summary.get("state") in TERMINAL:
                break
        report["psnr_by_time"] = scores
        report["server_model_loads"] = jobs.cache.loads  # 0 unless --in-process: workers load their own
        if warm is not None:
            warm.join(1.0)
        report.update(stop_and_export(client, jobs, job_id))
    finally:
        demo.close()
        jobs.close()
        if executor is not None:
            executor.close()
    report.update(load_before=[round(x, 2) for x in load_before], load_after=[round(x, 2) for x in os.getloadavg()],
                  cpu_count=os.cpu_count(), device=args.device)
    return report


def stop_and_export(client: Any, jobs: Any, job_id: str) -> dict[str, Any]:
    """Press Stop on the first run and Generate again at once (the same session, as a person would); times until the
    second job trains (control back) and the first run's export in the background (from Stop to its end, and from
    its turn to ``exporting`` to its end), followed through the job manager: the first run's stream ends when it
    hands back control."""
    times: dict[str, float] = {}

    def follow() -> None:  # the first run until its export ends
        version = -1
        while True:
            view = jobs.wait(job_id, after_version=version, timeout_s=600)
            version = view.version
            if view.state == "exporting" and "export_start" not in times:
                times["export_start"] = time.perf_counter()
            if view.state in TERMINAL:
                times["first_done"] = time.perf_counter()
                times["first_state"] = view.state
                return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    stopped = time.perf_counter()
    client.predict(api_name="/stop")
    second = client.submit(prompt="a snowman", extra_overrides="", api_name="/generate")
    control_back = None
    for out in second:
        if out[0].get("state") == "running" and control_back is None:
            control_back = time.perf_counter() - stopped
            jobs.cancel(out[0]["id"])
        if out[0].get("state") in TERMINAL:
            break
    follower.join(600)
    done = times.get("first_done")
    view = jobs.view(job_id)
    config = view.config_yaml
    frames = next((line.split(":")[1].strip() for line in config.splitlines() if "turntable_frames" in line), "?")
    size = next((line.split(":")[1].strip() for line in config.splitlines() if "turntable_size" in line), "?")
    return {"stop_to_control_back_s": round(control_back, 1) if control_back is not None else None,
            "stop_to_export_end_s": round(done - stopped, 1) if done is not None else None,
            "stopped_export_s": round(done - times["export_start"], 1) if done and "export_start" in times else None,
            "stopped_run_end_state": times.get("first_state"), "stopped_run_files": sorted(view.files),
            "stopped_at_step": view.steps[-1].step if view.steps else 0,
            "turntable_frames": frames, "turntable_size": size}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="a red toy car")
    parser.add_argument("--dataset", default="assets/demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-warm", dest="warm", action="store_false", help="start without the model warm-up")
    parser.add_argument("--in-process", action="store_true",
                        help="train in the server's process (app.py --in-process; default: app.py's capped worker "
                             "process per job)")
    parser.add_argument("--psnr-db", type=float, default=20.0, help="recognisable from this test-view PSNR on")
    parser.add_argument("--score-every-s", type=float, default=10.0)
    parser.add_argument("--view-stride", type=int, default=10, help="score every N-th test view")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="stop waiting for a recognisable result")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    report = run(args)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
