"""Quality matrix: ``python -m lucid_app bench quality`` over objects x methods x seeds, summarised.

Each cell is its own subprocess (``OMP_NUM_THREADS=1``, ``--jobs`` of them at a time) running the demo preset on
``assets/demo``; its JSON line is echoed as it finishes (prefixed ``cell``), and the last line of stdout is one JSON
object with, per object, method and eval step, the mean and the sample standard deviation over the seeds of PSNR
and SSIM, plus the mean s/step and Gaussian count at the end. A cell that fails is reported with its stderr tail
and left out of the summary.

    python bench/quality_matrix.py --objects "a red toy car" "a potted flower" "a snowman" --methods ism sds \\
        --seeds 0 1 2 --steps 1000 --jobs 2
    python bench/quality_matrix.py --objects "a red toy car" --methods naive --seeds 0 --steps 250 \\
        --set guidance.delta_t=10 --set guidance.delta_t_start=10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_cell(obj: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One ``bench quality`` run in a subprocess; its JSON result, or ``{"error": ...}``."""
    command = [
        sys.executable, "-m", "lucid_app", "bench", "quality", "--dataset", args.dataset, "--prompt", obj,
        "--method", method, "--steps", str(args.steps), "--seed", str(seed), "--eval-steps", args.eval_steps,
        "--device", "cpu",
    ]
    for override in args.set:
        command += ["--set", override]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"prompt": obj, "method": method, "seed": seed, "error": done.stderr[-2000:]}
    return json.loads(lines[-1])


def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sample std over seeds per (object, method, step)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        if "error" not in cell:
            groups[(cell["prompt"], cell["method"])].append(cell)
    out = []
    for (obj, method), runs in sorted(groups.items()):
        steps = sorted({step for run in runs for step, _ in run["psnr_by_step"]})
        rows = []
        for step in steps:
            psnrs = [v for run in runs for s, v in run["psnr_by_step"] if s == step]
            ssims = [v for run in runs for s, v in run["ssim_by_step"] if s == step]
            rows.append({
                "step": step, "n": len(psnrs),
                "psnr_mean": round(statistics.fmean(psnrs), 2),
                "psnr_std": round(statistics.stdev(psnrs), 2) if len(psnrs) > 1 else None,
                "ssim_mean": round(statistics.fmean(ssims), 3),
                "ssim_std": round(statistics.stdev(ssims), 3) if len(ssims) > 1 else None,
            })
        out.append({
            "object": obj, "method": method, "seeds": sorted(run["seed"] for run in runs), "by_step": rows,
            "s_per_step": round(statistics.fmean(run["s_per_step"] for run in runs), 3),
            "n_gaussians": round(statistics.fmean(run["n_gaussians"] for run in runs)),
        })
    return {"cells": len(cells), "failed": sum("error" in c for c in cells), "summary": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="assets/demo")
    parser.add_argument("--objects", nargs="+", default=["a red toy car", "a potted flower", "a snowman"])
    parser.add_argument("--methods", nargs="+", default=["ism", "sds"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-steps", default="250,500,1000,2000")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--jobs", type=int, default=2, help="cells run at once (one thread each)")
    args = parser.parse_args()

    grid = [(o, m, s) for o in args.objects for m in args.methods for s in args.seeds]
    cells = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for cell in pool.map(lambda c: run_cell(*c, args), grid):
            cells.append(cell)
            print("cell", json.dumps(cell), flush=True)
    print(json.dumps(summarise(cells)))


if __name__ == "__main__":
    main()
