"""``python -m lucid_app batch PROMPTS --out DIR``: many prompts at once, each a Ray task training into ``DIR/<name>/``.

1. The prompts file is read and every entry checked (:mod:`lucid_app.batch.prompts_file`); bad entries are reported with
   their line numbers before anything starts, and the others run.
2. Each entry's folder is planned: a finished run (its ``metrics.jsonl`` ends ``done`` and it has a ``model.ply``) is
   skipped, one with a checkpoint is resumed, a new one starts. A folder holding a run of other settings, or files
   that are not a run, is reported and left alone.
3. Each entry to run is one Ray task (:func:`run_prompt`) running the same trainer as ``generate`` into the same run
   folder. Ray retries a task whose worker died (up to ``--retries``); the retry resumes from the folder's last
   checkpoint (time-based, ``export.checkpoint_every_s``). A user error (the model does not load on the worker, a
   damaged checkpoint) ends the task with a ``failed`` result, so it is reported, not retried.
4. Progress: a bar for the batch and one per running job (step, s/step) on stderr, from a small progress actor the tasks
   report to; ``index.json`` / ``index.html`` are rewritten after every job (:mod:`lucid_app.batch.index`). The
   command's arguments, bars and summary are :mod:`lucid_app.cli.batch`.
5. Ctrl-C / SIGTERM cancel the running tasks: each trainer catches the interrupt, exports its last good state and a
   checkpoint, so running the same command again resumes every unfinished run.

Tasks rather than actors: nothing talks to a batch job while it runs, and Ray's task retries are exactly the
"worker died → run again" this needs. The run folders and the model must be reachable from every worker (a shared
folder on a cluster; see README "Scale out").
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lucid_app.batch.index import last_status
from lucid_app.batch.prompts_file import BadLine, BatchEntry
from lucid_app.config import ConfigError, TrainConfig, from_yaml, replace, to_yaml
from lucid_app.io.files import OutputError
from lucid_app.io.run_layout import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, PLY_NAME
from lucid_app.train.interrupts import StopOnSignal

logger = logging.getLogger(__name__)

CANCEL_WAIT_S = 120.0
POLL_S = 0.5

Progress = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class PlannedRun:
    """An entry to run: ``resume`` when its folder holds a checkpoint of the same settings."""

    entry: BatchEntry
    run_dir: Path
    resume: bool


# ---------------------------------------------------------------------------------------------- planning


def plan_runs(entries: list[BatchEntry], out: Path) -> tuple[list[PlannedRun], list[BatchEntry], list[BadLine]]:
    """Split entries into (to run, finished earlier: skipped, folders that cannot be used: reported).

    A folder's run counts as the entry's when its ``config.yaml`` equals the entry's config (the prompt schedule
    aside, which a run records as it goes).
    """
    from lucid_app.train.prepare import check_new_run_dir

    to_run, finished, unusable = [], [], []
    for entry in entries:
        run_dir = out / entry.name
        config_path = run_dir / CONFIG_NAME
        if not config_path.is_file():
            try:
                check_new_run_dir(run_dir)
            except OutputError as err:
                unusable.append(BadLine(entry.line, entry.prompt, f"{entry.name}/: {err}"))
                continue
            to_run.append(PlannedRun(entry, run_dir, resume=False))
            continue
        try:
            saved = from_yaml(config_path.read_text(encoding="utf-8"))
        except (ConfigError, OSError) as err:
            unusable.append(BadLine(entry.line, entry.prompt, f"{config_path} cannot be read ({err}); move the "
                                                              "folder away to run this prompt again"))
            continue
        if _comparable(saved) != _comparable(entry.config):
            unusable.append(BadLine(entry.line, entry.prompt,
                                    f"{run_dir} holds a run with other settings; move it away, or use another --out"))
            continue
        if last_status(run_dir / METRICS_NAME) == "done" and (run_dir / PLY_NAME).is_file():
            finished.append(entry)
        else:
            to_run.append(PlannedRun(entry, run_dir, resume=(run_dir / CHECKPOINT_NAME).is_file()))
    return to_run, finished, unusable


def _comparable(config: TrainConfig) -> str:
    return to_yaml(replace(config, prompt_schedule=()))


# ---------------------------------------------------------------------------------------------- on a Ray worker


class ProgressBoard:
    """The latest step of every running job, reported by the tasks and read by the driver (a Ray actor on use).

    A report from a new process (a retry after the worker died) adds the time the previous attempt ran to
    ``spent_s``, so a job's seconds cover all its attempts.
    """

    def __init__(self) -> None:
        self._jobs: Progress = {}

    def report(self, name: str, step: int, total: int, step_s: float, pid: int) -> None:
        now = time.time()
        job = self._jobs.setdefault(name, {"pid": pid, "start": now, "last": now, "spent_s": 0.0, "attempts": 1})
        if job["pid"] != pid:
            job.update(pid=pid, spent_s=job["spent_s"] + job["last"] - job["start"], start=now,
                       attempts=job["attempts"] + 1)
        job.update(step=step, total=total, step_s=step_s, last=now)

    def snapshot(self) -> Progress:
        return {name: dict(job) for name, job in self._jobs.items()}


def run_prompt(name: str, config: TrainConfig, run_dir: str, device: str, board: Any) -> dict[str, Any]:
    """One batch entry on a Ray worker: load the model, start or resume the run in ``run_dir``, train to the end.

    Returns:
        {"status": done | stopped | failed, "message", "step", "seconds" (this attempt), "user_error"}. User errors
        are returned, never raised, so Ray does not retry them; a killed worker is retried by Ray and resumes here.
    """
    from lucid_app.avatar import check_avatar
    from lucid_app.avatar.body import AvatarError
    from lucid_app.io.checkpoints import load_checkpoint
    from lucid_app.io.files import remove_files
    from lucid_app.priors.base import PriorError
    from lucid_app.train.events import StepEvent
    from lucid_app.train.prepare import check_new_run_dir, load_run_prior
    from lucid_app.train.trainer import Trainer

    start = time.perf_counter()
    folder = Path(run_dir)
    pid = os.getpid()
    try:
        state = load_checkpoint(folder / CHECKPOINT_NAME) if (folder / CHECKPOINT_NAME).is_file() else None
        if config.avatar.enabled:
            check_avatar(config)
        prepared = load_run_prior(config, device, allow_demo=False)
        if state is not None:
            trainer = Trainer.resume(folder, prepared.prior, state=state)
        else:
            _, previous = check_new_run_dir(folder, overwrite=True)  # a start killed before its first checkpoint
            remove_files(previous)
            trainer = Trainer(config, prepared.prior, run_dir=folder)
    except PriorError as err:
        return _result("failed", f"the Ray worker on {_host()} could not load the model: {err}", 0, start, True)
    except (ConfigError, AvatarError, OSError, ValueError) as err:
        return _result("failed", str(err), 0, start, True)
    board.report.remote(name, trainer.step, config.optim.steps, 0.0, pid)

    def on_event(event: object) -> None:
        if isinstance(event, StepEvent):
            board.report.remote(name, event.step, event.total_steps, event.seconds, pid)

    done = trainer.run(on_event)
    return _result(done.status, done.message, done.step, start, False)


def _result(status: str, message: str, step: int, start: float, user_error: bool) -> dict[str, Any]:
    return {"status": status, "message": message, "step": step, "seconds": time.perf_counter() - start,
            "user_error": user_error}


def _host() -> str:
    import socket

    return socket.gethostname()


# ---------------------------------------------------------------------------------------------- the driver


def run_batch(
    runs: list[PlannedRun],
    address: str = "auto",
    gpus_per_job: float | None = None,
    cpus_per_job: float = 1.0,
    retries: int = 2,
    on_progress: Callable[[Progress], None] | None = None,
    on_result: Callable[[PlannedRun, dict[str, Any]], None] | None = None,
    num_cpus: int | None = None,
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Run the planned entries as Ray tasks, at most as many at once as the cluster's resources allow.

    Args:
        runs: what :func:`plan_runs` returned to run.
        address, num_cpus: where to run (``lucid_app.batch.cluster.connect``); a Ray already connected is used as it is.
        gpus_per_job: GPUs per task (None: 1 when the cluster has GPUs, else 0); cpus_per_job: CPUs per task.
        retries: how many times Ray runs a task again after its worker died.
        on_progress: called with the progress board's snapshot about every ``POLL_S`` (name → step, total,
            step_s, pid, attempts); on_result: called as each entry ends, with its result.

    Returns:
        (entry name → result: status, message, step, seconds over all attempts; the signal that interrupted the
        batch, None if none). Interrupted entries end ``stopped`` with their folders resumable.

    Raises:
        RayError: Ray is missing, the cluster cannot be reached, or it cannot fit one job.
    """
    from lucid_app.batch.cluster import RayError, connect, import_ray, job_resources, worker_device

    ray = import_ray()
    connected = connect(address, num_cpus=num_cpus)
    try:
        gpus, cpus, _ = job_resources(gpus_per_job, cpus_per_job)
        board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        task = ray.remote(run_prompt).options(num_gpus=gpus, num_cpus=cpus, max_retries=retries,
                                               retry_exceptions=False)
        pending = {task.remote(r.entry.name, r.entry.config, str(r.run_dir), worker_device(gpus), board): r
                   for r in runs}
        results: dict[str, dict[str, Any]] = {}
        try:
            signum = _collect(ray, pending, board, results, on_progress, on_result)
        except ray.exceptions.RayError as err:  # the cluster itself failed (not one job): the log has the details
            logger.debug("Ray failed", exc_info=True)
            raise RayError(f"the Ray cluster failed during the batch ({type(err).__name__}); run the same command "
                           "again to resume every unfinished run") from None
        return results, (signal.Signals(signum).name if signum is not None else None)
    finally:
        if connected:
            ray.shutdown()


def _collect(ray: Any, pending: dict[Any, PlannedRun], board: Any, results: dict[str, dict[str, Any]],
             on_progress: Callable[[Progress], None] | None,
             on_result: Callable[[PlannedRun, dict[str, Any]], None] | None) -> int | None:
    """Gather the tasks' results as they end; on Ctrl-C / SIGTERM cancel the rest and gather what they export."""
    signum = None
    with StopOnSignal() as signals:  # no stop hook: the first signal raises Interrupted at once
        while pending:
            try:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                progress = ray.get(board.snapshot.remote())
                if on_progress is not None:
                    on_progress(progress)
                for ref in ready:
                    run = pending.pop(ref)
                    results[run.entry.name] = _outcome(ray, ref, progress.get(run.entry.name, {}))
                    if on_result is not None:
                        on_result(run, results[run.entry.name])
            except KeyboardInterrupt:
                signum = signals.signum or signal.SIGINT
                logger.warning("interrupted: stopping %d running job(s); each exports its state", len(pending))
                break
    if signum is None:
        return None
    for ref in pending:
        ray.cancel(ref)  # a KeyboardInterrupt in the task: the trainer stops, exports and checkpoints
    ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
    progress = ray.get(board.snapshot.remote())
    for ref, run in pending.items():
        outcome = _outcome(ray, ref, progress.get(run.entry.name, {}), timeout_s=0)
        if outcome["status"] == "failed" and not outcome.get("user_error"):
            outcome.update(status="stopped", message="interrupted; run the same command again to resume it")
        results[run.entry.name] = outcome
        if on_result is not None:
            on_result(run, outcome)
    return signum


def _outcome(ray: Any, ref: Any, progress: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """A task's result, or a ``failed`` one saying why it has none; seconds summed over its attempts."""
    try:
        result = dict(ray.get(ref, timeout=timeout_s))
    except ray.exceptions.TaskCancelledError:
        result = {"status": "stopped", "message": "interrupted; run the same command again to resume it",
                  "step": progress.get("step", 0), "seconds": 0.0, "user_error": False}
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.GetTimeoutError) as err:
        result = {"status": "failed", "message": f"the worker died and the retries ran out ({type(err).__name__}); "
                  "run the same command again to resume from the last checkpoint",
                  "step": progress.get("step", 0), "seconds": 0.0, "user_error": False}
    except ray.exceptions.RayTaskError as err:
        logger.error("a batch job raised: %s", err)
        result = {"status": "failed", "message": f"internal error ({type(err.cause).__name__}: {err.cause}); "
                  "rerun with --verbose and see the log", "step": progress.get("step", 0), "seconds": 0.0,
                  "user_error": False}
    if progress:
        result["seconds"] = progress.get("spent_s", 0.0) + result["seconds"]
        result["attempts"] = progress.get("attempts", 1)
    return result


__all__ = ["PlannedRun", "ProgressBoard", "plan_runs", "run_batch", "run_prompt"]
