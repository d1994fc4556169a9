"""A job's peak memory and time, measured against the app's estimate (``lucid_app/train/budget.py``, issue 24).

Each case runs in a fresh Python process (as the app's worker process does): the offline demo preset with the
case's overrides, a few training steps with densification off (so the Gaussian count is the setting's), then the
end export. The process records its peak resident set size (``VmHWM``) and the seconds per step and of the export.
Prints one JSON object (last line of stdout): per case the settings, the measured peak and times and the estimate,
and the worst ratio of estimate to measurement.

    python bench/job_memory.py                      # every case (a few minutes on a 2-core CPU)
    python bench/job_memory.py --cases points_100k render_256
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("bench.job_memory")
STEPS = 4
# The overrides every case shares: a short run, densification off (the Gaussian count stays the setting's), no
# previews or periodic checkpoints, a small export unless the case sets its own, no mesh.
COMMON = ["densify.enabled=false", "export.preview_every=0", "export.checkpoint_every=0",
          "export.checkpoint_every_s=0", "export.turntable_frames=8", "export.turntable_size=64",
          "export.eval_views=2", "export.mesh=false"]
CASES: dict[str, list[str]] = {
    "demo": [],
    "points_20k": ["init.num_points=20000"],
    "points_100k": ["init.num_points=100000"],
    "points_300k": ["init.num_points=300000"],
    "render_128": ["render.width=128", "render.height=128"],
    "render_256": ["render.width=256", "render.height=256"],
    "views_8": ["cameras.batch_size=8"],
    "views_8_points_100k": ["cameras.batch_size=8", "init.num_points=100000"],
    "mv_res_32": ["model.multiview_resolution=32"],
    "mv_res_128": ["model.multiview_resolution=128"],
    "learned_prior": ["model.id=assets/demo_prior", "guidance.method=sds"],
    "export_512": ["export.turntable_frames=24", "export.turntable_size=512", "export.eval_views=4"],
    "mesh_128": ["export.mesh=true", "export.mesh_resolution=128"],
}


def _vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_hwm() -> None:
    """Start a new peak from the present resident size (Linux's ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def measure_case(overrides: list[str]) -> dict[str, float]:
    """One case in this process: the peak resident size of the whole run and of its phases (imports, model load and
    initial Gaussians, training, export), the median seconds per step, the export's and the load's seconds."""
    from lucid_app.train.events import StepEvent, TrainedEvent
    from lucid_app.train.prepare import load_run_prior, resolve_config
    from lucid_app.train.trainer import Trainer

    config = resolve_config("demo", None, None, None, [*COMMON, f"optim.steps={STEPS}", *overrides])
    peaks = {"imports_gb": _vm_hwm_bytes() / 1e9}
    overall = peaks["imports_gb"]
    _reset_hwm()
    started = time.perf_counter()
    prepared = load_run_prior(config, "cpu", allow_demo=False)
    load_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(prepared.config, prepared.prior, run_dir=Path(folder) / "run")
        peaks["load_gb"] = _vm_hwm_bytes() / 1e9
        _reset_hwm()
        steps: list[float] = []
        trained: list[float] = []

        def on_event(event: object) -> None:
            if isinstance(event, StepEvent):
                steps.append(event.seconds)
            elif isinstance(event, TrainedEvent):
                peaks["train_gb"] = _vm_hwm_bytes() / 1e9
                trained.append(time.perf_counter())
                _reset_hwm()

        trainer.run(on_event)
        export_s = time.perf_counter() - trained[0]
    peaks["export_gb"] = _vm_hwm_bytes() / 1e9
    overall = max(overall, peaks["load_gb"], peaks["train_gb"])
    later = sorted(steps[1:]) or steps
    return {"peak_gb": max(overall, peaks["export_gb"]), **peaks, "step_s": later[len(later) // 2],
            "export_s": export_s, "load_s": load_s}


def run_case(name: str) -> dict[str, object]:
    """``name`` in a fresh process, with the estimate beside the measurement."""
    from lucid_app.train.budget import estimate_job, model_facts
    from lucid_app.train.prepare import resolve_config

    overrides = CASES[name]
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(overrides)], capture_output=True,
                         text=True, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    config = resolve_config("demo", None, None, None, [*COMMON, f"optim.steps={STEPS}", *overrides])
    estimate = estimate_job(config, model_facts(config.model), "cpu")
    return {"case": name, "overrides": overrides, **{k: round(v, 3) for k, v in measured.items()},
            "estimated_gb": round(estimate.peak_gb, 3), "estimated_step_s": round(estimate.step_s, 3),
            "estimated_export_s": round(estimate.export_s, 3),
            "ratio": round(estimate.peak_gb / measured["peak_gb"], 3)}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        result = measure_case(json.loads(args.child))
        print(json.dumps(result))
        return result
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    rows = []
    for name in args.cases:
        row = run_case(name)
        log.info("%s", json.dumps(row))
        rows.append(row)
    ratios = [row["ratio"] for row in rows]
    result = {"bench": "job_memory", "steps": STEPS, "cases": rows, "min_ratio": min(ratios),
              "max_ratio": max(ratios), "load": os.getloadavg()[0]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
