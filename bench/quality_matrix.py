"""Quality matrix: ``python -m lucid_app bench quality`` over objects x methods x seeds, summarised.

Each cell is its own subprocess (``OMP_NUM_THREADS=1``, ``--jobs`` of them at a time) running the demo preset on
the dataset (default ``assets/demo``) with the prior ``--model`` (default: the dataset's multi-view prior); its JSON
line is echoed as it finishes (prefixed ``cell``), and the last line of stdout is one JSON object with, per object,
method and eval step, the mean and the sample standard deviation over the seeds of PSNR and SSIM, plus the mean
s/step and Gaussian count at the end. A cell that fails is reported with its stderr tail and left out of the
summary.

``oracle`` (supervised fit of the train views, ``lucid_app/bench/oracle.py``) is a method like the others, so the
ceiling is measured once per object and seed. Beside every method's figures the summary puts the oracle's mean PSNR over
the *same* seeds (``oracle_psnr_mean``, per eval step) and
    oracle_fraction = (psnr_mean − psnr_init_mean) / (oracle_psnr_mean − psnr_init_mean)
(``bench_quality.oracle_fraction`` on the means; psnr_init is the initial Gaussians' PSNR, the same for every
method of a seed): the share of the supervised ceiling's gain that the method reaches, 1 for the oracle itself.

    python bench/quality_matrix.py --objects "a red toy car" "a potted flower" "a snowman" \\
        --methods ism sds oracle --seeds 0 1 2 --steps 1000 --jobs 2
    python bench/quality_matrix.py --model runs/prior --objects "a red toy car" --steps 500
    python bench/quality_matrix.py --objects "a red toy car" --methods naive --seeds 0 --steps 250 \\
        --set guidance.delta_t=10 --set guidance.delta_t_start=10
    python bench/quality_matrix.py --model runs/prior --resume first.out > second.out   # after an interruption

``--resume`` takes an earlier run's stdout: its finished cells are not run again and count in the summary (the
caller keeps the settings the same; the cells carry them, ``steps``, ``model`` and ``preset``, for checking).
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
sys.path.insert(0, str(ROOT))

from lucid_app.bench.quality import METHODS, ORACLE, oracle_fraction  # noqa: E402

DEFAULT_METHODS = ("ism", "sds", "naive", ORACLE)


def run_cell(obj: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One ``bench quality`` run in a subprocess; its JSON result, or ``{"error": ...}``."""
    command = [
        sys.executable, "-m", "lucid_app", "bench", "quality", "--dataset", args.dataset, "--prompt", obj,
        "--method", method, "--steps", str(args.steps), "--seed", str(seed), "--eval-steps", args.eval_steps,
        "--device", "cpu",
    ]
    if args.model:
        command += ["--model", args.model]
    for override in args.set:
        command += ["--set", override]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"prompt": obj, "method": method, "seed": seed, "error": done.stderr[-2000:]}
    return json.loads(lines[-1])


def _psnr_at(runs: list[dict[str, Any]], step: int) -> list[float]:
    return [v for run in runs for s, v in run["psnr_by_step"] if s == step]


def _fraction(psnr: float, init: float, oracle: float | None) -> float | None:
    value = None if oracle is None else oracle_fraction(psnr, init, oracle)
    return None if value is None else round(value, 3)


def _doctor_means(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    """The prior doctor's restoring coefficient of the cells' method, {t: r} averaged over the cells that measured it
    (``bench quality``'s "doctor"); None for the oracle and cells run with ``--no-doctor``."""
    measured = [run["doctor"]["restoring"] for run in runs if "doctor" in run]
    if not measured:
        return None
    return {t: round(statistics.fmean(r[t] for r in measured), 3) for t in measured[0]}


def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sample std over seeds per (object, method, step), with the oracle's mean PSNR over the same seeds and
    the oracle fraction of the means (module docstring) wherever the oracle ran for those seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        if "error" not in cell:
            groups[(cell["prompt"], cell["method"])].append(cell)
    out = []
    for (obj, method), runs in sorted(groups.items()):
        seeds = sorted(run["seed"] for run in runs)
        oracle_runs = [run for run in groups.get((obj, ORACLE), []) if run["seed"] in seeds]
        paired = sorted(run["seed"] for run in oracle_runs) == seeds
        init = statistics.fmean(run["psnr_init"] for run in runs)
        steps = sorted({step for run in runs for step, _ in run["psnr_by_step"]})
        rows = []
        for step in steps:
            psnrs = _psnr_at(runs, step)
            ssims = [v for run in runs for s, v in run["ssim_by_step"] if s == step]
            oracle_psnrs = _psnr_at(oracle_runs, step) if paired else []
            oracle_mean = statistics.fmean(oracle_psnrs) if len(oracle_psnrs) == len(psnrs) else None
            rows.append({
                "step": step, "n": len(psnrs),
                "psnr_mean": round(statistics.fmean(psnrs), 2),
                "psnr_std": round(statistics.stdev(psnrs), 2) if len(psnrs) > 1 else None,
                "ssim_mean": round(statistics.fmean(ssims), 3),
                "ssim_std": round(statistics.stdev(ssims), 3) if len(ssims) > 1 else None,
                "oracle_psnr_mean": None if oracle_mean is None else round(oracle_mean, 2),
                "oracle_fraction": _fraction(statistics.fmean(psnrs), init, oracle_mean),
            })
        out.append({
            "object": obj, "method": method, "seeds": seeds, "psnr_init_mean": round(init, 2), "by_step": rows,
            "oracle_psnr": rows[-1]["oracle_psnr_mean"], "oracle_fraction": rows[-1]["oracle_fraction"],
            "s_per_step": round(statistics.fmean(run["s_per_step"] for run in runs), 3),
            "n_gaussians": round(statistics.fmean(run["n_gaussians"] for run in runs)),
            "prior_evals_per_view": round(statistics.fmean(run.get("prior_evals_per_view", 0.0) for run in runs), 2),
            "doctor_restoring": _doctor_means(runs),
        })
    return {"cells": len(cells), "failed": sum("error" in c for c in cells), "summary": out}


def read_cells(path: Path) -> list[dict[str, Any]]:
    """The finished cells (no ``error``) an earlier run printed to ``path`` (its ``cell {...}`` lines)."""
    cells = [json.loads(line[len("cell "):]) for line in path.read_text().splitlines() if line.startswith("cell {")]
    return [cell for cell in cells if "error" not in cell]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="assets/demo")
    parser.add_argument("--model", default=None, metavar="PRIOR",
                        help="prior for every cell (default: multiview: + the dataset); the oracle needs none")
    parser.add_argument("--objects", nargs="+", default=["a red toy car", "a potted flower", "a snowman"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-steps", default="250,500,1000,2000")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--jobs", type=int, default=2, help="cells run at once (one thread each)")
    parser.add_argument("--resume", type=Path, action="append", default=[], metavar="OUTPUT",
                        help="the stdout of an earlier run: its finished cells are kept (not run again) and summarised")
    args = parser.parse_args()

    cells = [cell for path in args.resume for cell in read_cells(path)]
    done = {(cell["prompt"], cell["method"], cell["seed"]) for cell in cells}
    grid = [(o, m, s) for o in args.objects for m in args.methods for s in args.seeds if (o, m, s) not in done]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for cell in pool.map(lambda c: run_cell(*c, args), grid):
            cells.append(cell)
            print("cell", json.dumps(cell), flush=True)
    print(json.dumps(summarise(cells)))


if __name__ == "__main__":
    main()
