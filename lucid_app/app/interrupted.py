"""Interrupted runs: run folders a server restart (or a kill) left behind, which the app offers to resume.

A run is interrupted when its folder holds a checkpoint and its metrics log has no final record: the trainer writes
``{"status": ...}`` as the last record whenever a run ends (done, stopped, failed, Ctrl-C), so only a kill leaves
none. The app resumes such a run from its checkpoint (``JobManager.resume_run``, as ``generate --resume`` does).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from lucid_app.app.run_folders import RunInfo, list_runs
from lucid_app.io.run_layout import CHECKPOINT_NAME, METRICS_NAME

# The last record of a metrics log lies within this many bytes of its end (records are one short line each).
_TAIL_BYTES = 64 * 1024


def last_record(metrics: Path) -> dict | None:
    """The last JSON record of a ``metrics.jsonl`` (None when it is missing, empty or its last line is damaged)."""
    try:
        with metrics.open("rb") as file:
            file.seek(0, 2)
            size = file.tell()
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read()
    except OSError:
        return None
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        record = json.loads(lines[-1])
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def is_interrupted(run_dir: Path) -> bool:
    """The run in ``run_dir`` has a checkpoint and never ended (module docstring)."""
    if not (run_dir / CHECKPOINT_NAME).is_file():
        return False
    record = last_record(run_dir / METRICS_NAME)
    return record is None or "status" not in record


def interrupted_runs(outputs: Path, owner: str, active: Collection[Path] = ()) -> list[RunInfo]:
    """``owner``'s interrupted runs under ``outputs``, newest first, except those in ``active`` (queued or running
    here: a running run has no final record yet)."""
    busy = {Path(path).resolve() for path in active}
    return [run for run in list_runs(outputs, owner=owner)
            if run.path.resolve() not in busy and is_interrupted(run.path)]


__all__ = ["interrupted_runs", "is_interrupted", "last_record"]
