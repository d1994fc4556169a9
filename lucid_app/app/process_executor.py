"""The app's default executor: each training job in a worker process with a memory cap (issue 24).

Why a process: a job that asks for more memory than the machine has would take the server down with it (or, without
an OS cap, its neighbours). In a worker process started with multiprocessing's *spawn* context, an address-space
cap (``RLIMIT_AS``) turns such a request into an allocation failure *in the worker*: the job fails with one clear
line, the worker is replaced, and the server goes on answering (controls, previews, other sessions) meanwhile.

The cap is the worker's address space once it has imported torch and the trainer, plus the server's per-job limit
(``app.py --max-job-gb``): what the job itself may add. glibc's per-thread malloc arenas reserve address space they
never touch, so the worker limits them to two before it imports anything. On a CUDA device no cap is set: the CUDA
driver reserves far more address space than it uses, and the estimate checked before the job starts
(``train/budget.py``) is the only limit there.

Protocol: the app's side (this module: :class:`ProcessRun`, a :class:`~lucid_app.app.executors.JobRun`) sends the
worker (``job_worker.py``) calls and casts as pickled tuples over a pipe; the worker runs a
:class:`~lucid_app.app.job_host.JobHost` and sends back replies, the run's events as they happen and the prompt state
when it changes. A reader thread on the app's side
routes them. Values are pickled with the standard pickler (tensors by value), never through shared memory. A worker
whose job ended normally stays for the next job with its loaded model (``idle_workers`` of them); one whose job ran
out of memory, or that died, is replaced. :meth:`ProcessExecutor.warm` has the waiting workers load the app's default
model at start-up, so the first job finds it loaded.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from lucid_app.app.executors import RunError, started
from lucid_app.app.job_host import HostEvent, JobStart, control_fields
from lucid_app.app.job_worker import GB, Failure, worker_main
from lucid_app.config import ModelConfig, PromptChange, TrainConfig
from lucid_app.train.controls import ControlState, PromptState
from lucid_app.train.events import GaussianSnapshot

logger = logging.getLogger(__name__)

# A call's answer may take this long beyond its own timeout (the pipe, pickling a snapshot).
_REPLY_MARGIN_S = 30.0


class _Worker:
    """The app's handle of one worker process: calls with replies, casts, and an inbox of the run's messages."""

    def __init__(self, context: Any, device: str, job_bytes: int | None, log_level: int) -> None:
        ours, theirs = context.Pipe()
        self.process = context.Process(target=worker_main, args=(theirs, device, job_bytes, log_level),
                                       name="lucid-job-worker", daemon=True)
        self.process.start()
        theirs.close()
        self._conn = ours
        self._send_lock = threading.Lock()
        self._ids = itertools.count()
        self._replies: dict[int, Future[Any]] = {}
        self._replies_lock = threading.Lock()
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="lucid-job-worker-reader", daemon=True)
        self._reader.start()

    def call(self, name: str, *args: Any, timeout_s: float | None = None) -> Any:
        """``name(*args)`` in the worker; its result (a :class:`Failure` for an error raised there).

        Raises:
            RunError: the worker died (or did not answer within ``timeout_s``).
        """
        future: Future[Any] = Future()
        call_id = next(self._ids)
        with self._replies_lock:
            if not self.alive:
                raise RunError(self.death())
            self._replies[call_id] = future
        self._send(("call", name, call_id, args))
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            raise RunError(f"the job's worker did not answer within {timeout_s:g} s") from None

    def cast(self, name: str, *args: Any) -> None:
        """``name(*args)`` in the worker, without waiting (nothing happens once it has died)."""
        if self.alive:
            self._send(("cast", name, args))

    def _send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            with self._send_lock:
                self._conn.send_bytes(data)
        except (OSError, ValueError):
            logger.debug("the job worker's pipe is closed")

    def _read(self) -> None:
        while True:
            try:
                message = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                break
            if message[0] == "reply":
                with self._replies_lock:
                    future = self._replies.pop(message[1], None)
                if future is not None:
                    future.set_result(message[2])
            else:
                self.inbox.put((message[0], message[1]))
        self.process.join(timeout=5.0)
        with self._replies_lock:
            self.alive = False
            pending, self._replies = list(self._replies.values()), {}
        for future in pending:
            future.set_exception(RunError(self.death()))
        self.inbox.put(("died", self.process.exitcode))

    def death(self) -> str:
        code = self.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return f"the job's worker process ended unexpectedly ({how}), most likely out of memory"

    def stop(self) -> None:
        """End the worker: ask it to quit, then terminate it if it does not."""
        self.cast("quit")
        self.process.join(timeout=2.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5.0)
        self._conn.close()


class ProcessRun:
    """One job on a worker process (a :class:`~lucid_app.app.executors.JobRun`)."""

    def __init__(self, executor: ProcessExecutor, worker: _Worker, config: TrainConfig, allow_demo: bool,
                 run_dir: str, resume: bool) -> None:
        self._executor, self._worker = executor, worker
        self._healthy = True
        self._released = False
        self._expect(worker.call("open", config, allow_demo, run_dir, resume))

    def _expect(self, result: Any) -> Any:
        """``result`` of a call, or the :class:`RunError` its :class:`Failure` stands for."""
        if isinstance(result, Failure):
            self._healthy = False
            raise RunError(self._executor.failure_message(result))
        return result

    def prepare(self) -> JobStart:
        return started(self._expect(self._call("prepare")))

    def train(self, on_event: Callable[[HostEvent], None], on_prompt: Callable[[PromptState], None]) -> None:
        self._worker.cast("train")
        while True:
            kind, value = self._worker.inbox.get()
            if kind == "event":
                on_event(value)
            elif kind == "prompt":
                on_prompt(value)
            elif kind == "ended":
                self._expect(value)
                return
            else:
                self._healthy = False
                raise RunError(self._worker.death())

    def sync(self, state: ControlState) -> None:
        if not self._released:
            self._worker.cast("sync", control_fields(state), state.version)

    def change_prompt(self, changes: dict[str, object]) -> tuple[PromptChange, PromptState]:
        result = self._expect(self._call("change_prompt", changes))
        if isinstance(result, str):
            raise ValueError(result)
        return result

    def snapshot(self, timeout_s: float) -> GaussianSnapshot:
        result = self._expect(self._call("snapshot", timeout_s, timeout_s=timeout_s + _REPLY_MARGIN_S))
        if isinstance(result, str):
            raise RunError(result)
        return result

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._healthy and self._worker.alive:
            try:
                self._worker.call("end", timeout_s=_REPLY_MARGIN_S)
            except RunError:
                self._healthy = False
        self._executor.give_back(self._worker, self._healthy)

    def _call(self, name: str, *args: Any, timeout_s: float | None = None) -> Any:
        try:
            return self._worker.call(name, *args, timeout_s=timeout_s)
        except RunError:
            self._healthy = self._worker.alive
            raise


class ProcessExecutor:
    """Training jobs in capped worker processes (module docstring).

    Args:
        device: where the workers train (``cpu``, ``cuda``, ``cuda:N``).
        max_job_gb: the memory a job may add to its worker (the address-space cap; None: no cap).
        slots: jobs that train at once (each in its own worker; a job exporting in the background keeps its worker
            and the next job gets another).
        idle_workers: workers kept for the next job, with their loaded model (one is started at once, so the first
            job does not wait for the imports).
        log_level: the workers' logging level (default: the app's root logger's).
    """

    def __init__(self, device: str = "cpu", max_job_gb: float | None = None, slots: int = 1, idle_workers: int = 1,
                 log_level: int | None = None) -> None:
        self.device = device
        self.max_job_gb = max_job_gb
        self.slots = slots
        self.idle_workers = idle_workers
        self._job_bytes = None if max_job_gb is None else int(max_job_gb * GB)
        self._log_level = logging.getLogger().getEffectiveLevel() if log_level is None else log_level
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(idle_workers):
            self._idle.append(self._spawn())

    def _spawn(self) -> _Worker:
        return _Worker(self._context, self.device, self._job_bytes, self._log_level)

    def open(self, config: TrainConfig, allow_demo: bool, run_dir: str | Path, resume: bool = False) -> ProcessRun:
        with self._lock:
            if self._closed:
                raise RunError("the server is shutting down")
            while self._idle and not self._idle[-1].alive:
                self._idle.pop().stop()
            worker = self._idle.pop() if self._idle else self._spawn()
            self._busy.add(worker)
        try:
            return ProcessRun(self, worker, config, allow_demo, str(run_dir), resume)
        except RunError:
            self.give_back(worker, healthy=False)
            raise

    def warm(self, model: ModelConfig) -> None:
        """Have every waiting worker load ``model`` in the background (:meth:`JobExecutor.warm`; the worker's log says
        when it is ready, or why not). Returns None: the loads run in the workers."""
        with self._lock:
            workers = list(self._idle)
        for worker in workers:
            worker.cast("warm", model)
        logger.info("warm-up: %d job worker(s) loading model %s", len(workers), model.id)

    def give_back(self, worker: _Worker, healthy: bool) -> None:
        """A run is done with ``worker``: keep it for the next job when it is healthy and fewer than
        ``idle_workers`` wait, else end it."""
        with self._lock:
            self._busy.discard(worker)
            keep = healthy and worker.alive and not self._closed and len(self._idle) < self.idle_workers
            if keep:
                self._idle.append(worker)
        if not keep:
            worker.stop()
            logger.info("job worker %s ended (%s)", worker.process.pid, "healthy" if healthy else "replaced")

    def failure_message(self, failure: Failure) -> str:
        """The user's line for an error raised in a worker."""
        if failure.memory:
            limit = (f"the {self.max_job_gb:g} GB per job this server allows (--max-job-gb)"
                     if self.max_job_gb is not None else "the machine has")
            return (f"the job ran out of memory: it needed more than {limit}; lower the resolution, the number of "
                    "points or views, or the multi-view resolution")
        return f"internal error in the job's worker ({failure.kind}); the server log has the details"

    def idle_models(self, timeout_s: float = 30.0) -> list[list[str]]:
        """The model ids each waiting worker has loaded, for benchmarks and tests."""
        with self._lock:
            workers = list(self._idle)
        return [worker.call("models", timeout_s=timeout_s) for worker in workers]

    def worker_pids(self) -> list[int]:
        """The process ids of the workers (idle and busy), for benchmarks and tests."""
        with self._lock:
            return [w.process.pid for w in (*self._idle, *self._busy) if w.process.pid is not None]

    def close(self) -> None:
        """End every worker (a job still running in one ends with it)."""
        with self._lock:
            self._closed = True
            workers, self._idle = [*self._idle, *self._busy], []
            self._busy.clear()
        for worker in workers:
            worker.stop()


__all__ = ["ProcessExecutor", "ProcessRun"]

