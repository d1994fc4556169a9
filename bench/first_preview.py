"""Time to first preview: from pressing Generate to the first preview image, through the app's API (issue 14).

Starts the app on a free local port (as ``app.py`` does, on the CPU by default), loads the preset's model once (a
server that has already run has it cached), then ``--repeats`` times: submits ``/generate`` through
``gradio_client`` with the preset's settings (the demo's "preview every 50 steps" included), waits for the first
streamed update that carries a preview image, notes the time, stops the run and waits for it to end (with a short
turntable and no mesh, :data:`QUICK_EXPORT`: the export comes after the measured time and only delays the next
repeat, which would otherwise queue behind it). Prints one JSON
object (last line of stdout): the median and every measurement, the step of the first preview and the s/step.

    python bench/first_preview.py                      # the offline demo, 5 repeats
    python bench/first_preview.py --repeats 3 --set render.width=32
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("bench.first_preview")
QUICK_EXPORT = ["export.turntable_frames=12", "export.turntable_rings=1"]


def measure(url: str, prompt: str, preset: str, overrides: list[str]) -> dict[str, float]:
    """One Generate → first preview, through a fresh client (a new session); the run is stopped afterwards."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    started = time.perf_counter()
    job = client.submit(prompt=prompt, preset=preset, model="", export_mesh=False,
                        extra_overrides="\n".join([*QUICK_EXPORT, *overrides]), api_name="/generate")
    result: dict[str, float] = {}
    for out in job:
        summary, preview = out[0], out[3]
        if isinstance(preview, str) and "seconds" not in result:  # the first update that carries an image
            result = {"seconds": time.perf_counter() - started, "step": summary["preview_step"]}
            client.predict(api_name="/stop")
        if summary.get("state") in ("done", "failed", "cancelled"):
            break
    if not result:
        raise RuntimeError(f"the run ended without a preview: {summary}")
    return result


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--prompt", default="a red toy car")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from lucid_app.train.prepare import resolve_config
    from tests.app_harness import launch_app  # sets Gradio's environment before gradio is imported

    demo, jobs, url = launch_app(Path(tempfile.mkdtemp(prefix="first-preview-")), args.device)
    try:
        load_start = time.perf_counter()
        jobs.cache.get(resolve_config(args.preset, args.prompt, None, None, args.set).model, jobs.device)
        load_s = time.perf_counter() - load_start
        runs = []
        for i in range(args.repeats):
            runs.append(measure(url, args.prompt, args.preset, args.set))
            log.warning("run %d: first preview after %.2f s (step %d)", i + 1, runs[-1]["seconds"], runs[-1]["step"])
        steps = [e.seconds for v in jobs.views() for e in v.steps]
    finally:
        demo.close()
        jobs.close()
    report = {
        "bench": "first_preview", "preset": args.preset, "prompt": args.prompt, "overrides": args.set,
        "device": args.device, "cpu_count": os.cpu_count(), "model_load_s": round(load_s, 2),
        "median_s": round(statistics.median(r["seconds"] for r in runs), 2),
        "seconds": [round(r["seconds"], 2) for r in runs], "first_preview_step": [int(r["step"]) for r in runs],
        "mean_step_s": round(statistics.mean(steps), 3) if steps else None,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
