"""Ray, optional: importing it, connecting to a cluster, and sizing jobs on it (``batch`` and the app's Ray executor).

Ray is imported only here and only when used (:func:`import_ray`); without it every entry point says how to install
it. Workers need this package and its dependencies installed (the same environment as the driver), and every worker
loads the model itself, from its own hub cache or a folder all nodes share (``HF_HOME``, or a local model path that
exists on every node); a worker that cannot load it fails its job with the loader's message.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)


RAY_INSTALL = "pip install ray  (or: pip install -r requirements.txt)"


LOCAL_OBJECT_STORE_MB = 256


class RayError(ValueError):
    """Ray is missing, or the cluster cannot be reached or cannot run the jobs asked for (the message says what)."""


def import_ray() -> Any:
    """The ``ray`` module, imported on first use.

    Raises:
        RayError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise RayError(f"this needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def connect(address: str, num_cpus: int | None = None, object_store_mb: int = LOCAL_OBJECT_STORE_MB) -> bool:
    """Connect this process to Ray, unless it already is.

    Args:
        address: ``local`` (a new Ray instance on this machine, its CPU slots ``num_cpus``, default all), ``auto``
            (the cluster in ``RAY_ADDRESS`` or one already started on this machine, else a new local one) or a
            cluster address (``HOST:6379`` or ``ray://HOST:10001``).
        num_cpus, object_store_mb: the size of a local instance (ignored when joining a cluster).

    Returns:
        True when this call connected (the caller shuts Ray down when done), False when Ray was already connected.

    Raises:
        RayError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    local = dict(num_cpus=num_cpus, object_store_memory=object_store_mb * 1024 * 1024)
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    try:
        if address == "local":
            ray.init(address="local", **local, **kwargs)
        elif address == "auto":
            ray.init(**kwargs) if os.environ.get("RAY_ADDRESS") else _init_existing_or_local(ray, local, kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        logger.debug("ray.init failed", exc_info=True)
        raise RayError(f"cannot connect to Ray at {address!r} ({type(err).__name__}: {err}); start a cluster with "
                       "'ray start --head' and pass its address, or use --ray local") from None
    logger.info("Ray: %s", ", ".join(f"{k} {v:g}" for k, v in sorted(ray.cluster_resources().items())
                                       if k in ("CPU", "GPU")))
    return True


def _init_existing_or_local(ray: Any, local: dict[str, Any], kwargs: dict[str, Any]) -> None:
    try:
        ray.init(address="auto", **kwargs)
    except ConnectionError:
        ray.init(address="local", **local, **kwargs)


def job_resources(gpus_per_job: float | None, cpus_per_job: float) -> tuple[float, float, int]:
    """(GPUs per job, CPUs per job, how many such jobs the connected cluster runs at once).

    ``gpus_per_job`` None: 1 when the cluster has GPUs, else 0 (CPU jobs).

    Raises:
        RayError: a job needs more GPUs or CPUs than the whole cluster has (it would wait forever).
    """
    ray = import_ray()
    total = ray.cluster_resources()
    gpus, cpus = float(total.get("GPU", 0.0)), float(total.get("CPU", 0.0))
    if gpus_per_job is None:
        gpus_per_job = 1.0 if gpus >= 1 else 0.0
    if gpus_per_job > gpus:
        raise RayError(f"--gpus-per-job {gpus_per_job:g}: the Ray cluster has {gpus:g} GPUs; use --gpus-per-job 0 to "
                       "train on CPUs")
    if cpus_per_job > cpus:
        raise RayError(f"--cpus-per-job {cpus_per_job:g}: the Ray cluster has {cpus:g} CPUs")
    slots = int(gpus // gpus_per_job) if gpus_per_job > 0 else int(cpus // max(cpus_per_job, 1e-9))
    return gpus_per_job, cpus_per_job, max(1, slots)


def worker_device(gpus_per_job: float) -> str:
    """The torch device of a Ray worker: the GPU Ray gave it, else the CPU."""
    return "cuda" if gpus_per_job > 0 else "cpu"
