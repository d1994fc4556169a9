"""Task jobs: work besides training that queues on the job worker (:meth:`lucid_app.app.jobs.JobManager.submit_task`,
e.g. the pseudo-GT inspector), so it never runs beside training on the device.

A task is a function of a :class:`TaskContext` that returns a :class:`TaskResult`; it reports progress through the
context and ends early by :class:`TaskStopped` once its job is stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lucid_app.config import ModelConfig
from lucid_app.priors.base import DiffusionPrior


class TaskStopped(Exception):
    """Raised by :attr:`TaskContext.progress` inside a task whose job was stopped; the job ends ``cancelled``."""


@dataclass(frozen=True)
class TaskContext:
    """What the worker hands a task.

    Attributes:
        load_prior: the prior of a model config through the manager's cache (loads once, on the worker).
        folder: the task's own folder under the session's (created by whoever writes into it).
        progress: ``progress(done, total)`` publishes progress; raises :class:`TaskStopped` once the job is stopped.
    """

    device: torch.device
    load_prior: Callable[[ModelConfig], DiffusionPrior]
    folder: Path
    progress: Callable[[int, int], None]


@dataclass(frozen=True)
class TaskResult:
    """What a task produced: an image to show ([H, W, 3] uint8), JSON-able data, its files, a closing message."""

    image: np.ndarray | None = None
    data: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    message: str = ""


Task = Callable[[TaskContext], TaskResult]


__all__ = ["Task", "TaskContext", "TaskResult", "TaskStopped"]
