"""The worker process of the app's default executor (``process_executor.py``): one job after another, under an
address-space cap.

:func:`worker_main` is the process's entry point (started with multiprocessing's spawn context): it limits glibc's
malloc arenas, imports torch and the trainer, caps its address space (``RLIMIT_AS``, soft and hard) at its size
plus the job's allowance, then serves the app's calls and casts on its pipe with a
:class:`~lucid_app.app.job_host.JobHost` per job: replies, the run's events as they happen and the prompt state when it
changes go back as pickled tuples. An error raised here reaches the app as a :class:`Failure` (its type, first line,
and whether it was an allocation failure); the worker itself goes on.

Models load through the worker's own model cache: ``warm`` starts loading one in the background before any job
(the app's default model, at start-up), a job that asks for it meanwhile waits for that load, and a worker kept for
the next job keeps its model. Before each job the worker unloads any other model (its memory would count against
the job's cap), once a warm-up in progress has ended.
"""

from __future__ import annotations

import logging
import pickle
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lucid_app.app.job_host import HostEvent
    from lucid_app.config import ModelConfig, TrainConfig


logger = logging.getLogger(__name__)

GB = 1e9
# glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8
_ARENAS = 2
_MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "not enough memory", "out of memory",
                 "std::bad_alloc")


@dataclass(frozen=True)
class Failure:
    """An error raised in the worker, as the app's side receives it: its type, first line, and whether it was an
    allocation failure."""

    kind: str
    message: str
    memory: bool


def is_memory_error(err: BaseException) -> bool:
    """An allocation failure: Python's ``MemoryError`` or torch's allocator error (a ``RuntimeError``)."""
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and any(word in str(err).lower() for word in _MEMORY_WORDS))


def _failure(err: BaseException) -> Failure:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return Failure(kind=type(err).__name__, message=lines[0] if lines else "", memory=is_memory_error(err))


def _vm_size_bytes() -> int:
    """This process's address space (``VmSize``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def _limit_malloc_arenas() -> None:
    """At most :data:`_ARENAS` glibc malloc arenas (each thread's own would reserve 64 MB of address space)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).mallopt(_M_ARENA_MAX, _ARENAS)
        except (OSError, AttributeError):
            logger.debug("mallopt is not available; malloc arenas left as they are")


def cap_address_space(job_bytes: int) -> int:
    """Cap this process's address space at its present size plus ``job_bytes`` (soft and hard: the job cannot
    raise it); returns the cap in bytes."""
    import resource

    cap = _vm_size_bytes() + int(job_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


def worker_main(conn: Connection, device: str, job_bytes: int | None, log_level: int) -> None:
    """The worker process: import, cap, then serve one job after another (module docstring) until told to quit or
    the app's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle: it stops the jobs
    _limit_malloc_arenas()
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)s %(name)s [job worker %(process)d]: %(message)s")
    import torch

    from lucid_app.app.job_host import JobHost
    from lucid_app.app.model_cache import ModelCache
    from lucid_app.priors import load_prior

    torch_device = torch.device(device)
    if job_bytes is not None and torch_device.type == "cpu":
        cap = cap_address_space(job_bytes)
        logger.info("address space capped at %.1f GB (%.1f GB for the job)", cap / GB, job_bytes / GB)
    cache = ModelCache(load_prior, 1)
    send_lock = threading.Lock()
    host: list[JobHost | None] = [None]
    warming: list[threading.Thread] = []

    def send(message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with send_lock:
            conn.send_bytes(data)

    def answer(call_id: int, work: Callable[[], Any]) -> None:
        try:
            result: Any = work()
        except Exception as err:  # every error reaches the app as a Failure; the worker goes on
            logger.exception("job worker call failed")
            result = _failure(err)
        send(("reply", call_id, result))

    def train() -> None:
        def emit(event: HostEvent) -> None:
            state = host[0].prompt_update()
            if state is not None:
                send(("prompt", state))
            send(("event", event))

        try:
            host[0].train(emit)
        except BaseException as err:  # the trainer exported what it had; the app gets one line
            logger.exception("the job failed in its worker")
            send(("ended", _failure(err)))
            return
        send(("ended", None))

    def warm(model: ModelConfig) -> None:
        started = time.perf_counter()
        try:
            cache.get(model, torch_device)
        except Exception as err:  # the job that asks for the model says why
            logger.warning("warm-up: model %s not loaded: %s", model.id, err)
            return
        logger.info("warm-up: model %s ready after %.1f s", model.id, time.perf_counter() - started)

    def open_job(config: TrainConfig, allow_demo: bool, run_dir: str, resume: bool) -> None:
        for thread in warming:
            thread.join()
        warming.clear()
        cache.keep_only(config.model)
        host[0] = JobHost(config, allow_demo, run_dir, torch_device, resume=resume, loader=cache.get)

    calls: dict[str, Callable[..., Any]] = {
        "open": open_job,
        "prepare": lambda: host[0].prepare(),
        "change_prompt": lambda changes: host[0].change_prompt(changes),
        "snapshot": lambda timeout_s: host[0].snapshot(timeout_s),
        "end": lambda: host.__setitem__(0, None),
        "models": cache.model_ids,
    }
    # Calls that may wait on the training thread run beside the loop, so a stop is never stuck behind them.
    beside = {"change_prompt", "snapshot"}
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind, name, args = message[0], message[1], message[-1]
        if kind == "call":
            call_id = message[2]
            work = (lambda n=name, a=args: calls[n](*a))
            if name in beside:
                threading.Thread(target=answer, args=(call_id, work), daemon=True).start()
            else:
                answer(call_id, work)
        elif name == "train":
            threading.Thread(target=train, name="lucid-train", daemon=True).start()
        elif name == "sync":
            host[0].sync(*args)
        elif name == "warm":
            warming.append(threading.Thread(target=warm, args=args, name="lucid-warm-up", daemon=True))
            warming[-1].start()
        elif name == "quit":
            return


__all__ = ["Failure", "cap_address_space", "is_memory_error", "worker_main"]
