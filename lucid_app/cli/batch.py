"""The ``batch`` command: its arguments, progress bars and JSON summary (the work itself is :mod:`lucid_app.batch.run`).

Only light modules are imported at the top, so registering the command costs ``python -m lucid_app --help`` nothing;
the batch machinery (torch, the trainer, Ray) loads when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Ge, Le

from lucid_app.cli.types import bounded, non_negative_float
from lucid_app.config import ConfigError

if TYPE_CHECKING:
    from lucid_app.batch.prompts_file import BadLine
    from lucid_app.batch.run import PlannedRun, Progress

logger = logging.getLogger(__name__)

# Retries of one run after its worker died (user errors never retry).
RETRIES = Annotated[int, Ge(0), Le(100)]


class _Bars:
    """The batch's bar and one per running job on stderr."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.batch = tqdm(total=total, desc="batch", unit="run", file=sys.stderr, dynamic_ncols=True, position=0)
        self.jobs: dict[str, Any] = {}
        self.finished: set[str] = set()

    def progress(self, progress: Progress) -> None:
        for name, job in progress.items():
            if name in self.finished:
                continue
            bar = self.jobs.get(name)
            if bar is None:
                bar = self.jobs[name] = self._tqdm(total=job["total"], desc=name[:24], unit="step", file=sys.stderr,
                                                   dynamic_ncols=True, leave=False, position=len(self.jobs) + 1)
            bar.n = job.get("step", 0)
            bar.set_postfix_str(f"{job.get('step_s', 0.0):.2f} s/step" + (
                f", attempt {job['attempts']}" if job.get("attempts", 1) > 1 else ""))

    def result(self, run: PlannedRun, result: dict[str, Any]) -> None:
        self.finished.add(run.entry.name)
        bar = self.jobs.pop(run.entry.name, None)
        if bar is not None:
            bar.close()
        self.batch.update(1)
        self.batch.write(f"{run.entry.name}: {result['status']} at step {result.get('step', 0)}"
                         + (f" ({result['message']})" if result.get("message") else ""), file=sys.stderr)

    def close(self) -> None:
        for bar in self.jobs.values():
            bar.close()
        self.batch.close()


def cmd_batch(args: argparse.Namespace) -> dict[str, Any]:
    """Run every prompt of a file (see :mod:`lucid_app.batch.run`); returns the JSON summary."""
    from lucid_app.batch.index import BatchIndex, read_index
    from lucid_app.batch.prompts_file import read_batch
    from lucid_app.batch.run import plan_runs, run_batch
    from lucid_app.io.files import check_output_dir

    start = time.perf_counter()
    out = check_output_dir(args.out)
    entries, bad = read_batch(args.prompts, args.preset, args.set)
    for line in bad:
        logger.error("%s line %d: %s", args.prompts, line.line, line.message)
    to_run, finished, unusable = plan_runs(entries, out)
    for line in unusable:
        logger.error("%s line %d: %s", args.prompts, line.line, line.message)
    if not to_run and not finished:
        raise _nothing_to_run(args.prompts, [*bad, *unusable])
    logger.info("batch: %d to run (%d resumed), %d finished earlier and skipped, %d bad", len(to_run),
                sum(r.resume for r in to_run), len(finished), len(bad) + len(unusable))
    out.mkdir(parents=True, exist_ok=True)
    index = BatchIndex(out, str(args.prompts), entries, finished, [*bad, *unusable], read_index(out))

    def on_result(run: PlannedRun, result: dict[str, Any]) -> None:
        index.record(run.entry.name, run.run_dir, run.resume, result)
        bars.result(run, result)
        index.write()

    index.write()
    bars = _Bars(len(to_run))
    try:
        results, signal_name = run_batch(to_run, args.ray, args.gpus_per_job, args.cpus_per_job, args.retries,
                                         on_progress=bars.progress, on_result=on_result) if to_run else ({}, None)
    finally:
        bars.close()
    final = index.summary(signal_name)
    json_path, html_path = index.write(final)
    counts = final["counts"]
    return {
        "command": "batch", "prompts": str(args.prompts), "out": str(out), "entries": len(index.order),
        "ran": len(results), "skipped": len(finished), **counts, "index": str(json_path), "html": str(html_path),
        "runs": [{k: index.records[key].get(k) for k in ("line", "name", "status", "seconds", "message")}
                 for key in index.order],
        "signal": signal_name, "exit_status": 0 if counts["failed"] + counts["invalid"] == 0 else 1,
        "wall_s": round(time.perf_counter() - start, 3),
    }


def _nothing_to_run(prompts: str | Path, bad: list[BadLine]) -> ConfigError:
    """The error when no entry of the file can run, listing its bad lines."""
    listed = "; ".join(f"line {b.line}: {b.message}" for b in sorted(bad, key=lambda b: b.line))
    return ConfigError(f"{prompts}: no prompt can run ({listed})" if listed else f"{prompts}: no prompts")


def add_batch_parser(sub: Any) -> None:
    """Register ``batch`` on the CLI's subcommands."""
    batch = sub.add_parser("batch", help="many prompts at once as Ray tasks (a local Ray or a cluster)")
    batch.add_argument("prompts", help="prompts file: text (one a line, or 'prompt | preset | k=v ...'), .yaml or .csv")
    batch.add_argument("--out", required=True, help="folder of the runs (DIR/<prompt>/), index.json and index.html")
    batch.add_argument("--preset", default=None, help="preset of entries that name none")
    batch.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config override for every entry, before the entry's own (repeatable)")
    batch.add_argument("--ray", default="auto", metavar="auto|local|ADDRESS",
                       help="auto: the cluster in RAY_ADDRESS or one started on this machine, else a local one; "
                            "local: a new Ray on this machine's CPUs/GPUs; or a cluster address")
    batch.add_argument("--gpus-per-job", type=non_negative_float, default=None,
                       help="GPUs each job reserves (default: 1 if the cluster has GPUs, else 0: CPU jobs)")
    batch.add_argument("--cpus-per-job", type=non_negative_float, default=1.0, help="CPUs each job reserves")
    batch.add_argument("--retries", type=bounded(RETRIES), default=2,
                       help="runs again after a worker died, from the last checkpoint (user errors never retry)")
    batch.set_defaults(func=cmd_batch)
