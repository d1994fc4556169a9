"""The prior doctor as a job task: the app's "Check this model" panel (``/doctor``) queues it on the job worker.

It runs :func:`lucid_app.lab.doctor.run.diagnose` on the model of a resolved config (loaded through the worker's model
cache, so it never competes with a run for the device), writes ``doctor.json`` and ``doctor.svg`` into the task's
folder, and remembers the verdict for the model (:mod:`lucid_app.lab.doctor.verdicts`), so that later runs of a
method that drifts there get their warning before they train.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from lucid_app.app.tasks import Task, TaskContext, TaskResult
from lucid_app.config import TrainConfig
from lucid_app.io.files import write_text
from lucid_app.lab.doctor.measure import DoctorSettings
from lucid_app.lab.doctor.report import doctor_svg
from lucid_app.lab.doctor.run import diagnose
from lucid_app.lab.doctor.verdicts import remember

logger = logging.getLogger(__name__)

JSON_NAME = "doctor.json"
PLOT_NAME = "doctor.svg"


@dataclass(frozen=True)
class DoctorRequest:
    """What to check: the resolved config (model, prompt, guidance settings), the measurement's settings, and the
    clean views: a dataset folder of the server's (None: the model's own samples of the prompt)."""

    config: TrainConfig
    settings: DoctorSettings
    dataset: Path | None = None
    views: int = 4


def doctor_task(request: DoctorRequest) -> Task:
    """The job task that runs ``request`` (module docstring)."""
    return lambda context: run_doctor(request, context)


def run_doctor(request: DoctorRequest, context: TaskContext) -> TaskResult:
    """Measure, write the files, remember the verdict.

    Returns:
        TaskResult with no image, the doctor's JSON summary as ``data`` (plus ``"svg"``: the plot's text) and both
        files.
    """
    config = request.config
    prior = context.load_prior(config.model)
    result = diagnose(prior, config, request.settings, request.dataset, request.views, progress=context.progress)
    result = {"model": config.model.id, **result}
    svg = doctor_svg(result)
    files = {"json": str(write_text(context.folder / JSON_NAME, json.dumps(result, indent=1) + "\n")),
             "svg": str(write_text(context.folder / PLOT_NAME, svg))}
    remember(config.model.id, result)
    verdicts = ", ".join(f"{method.upper()} {verdict}" for method, verdict in result["verdict"].items())
    logger.info("doctor %s: %s", config.model.id, verdicts)
    return TaskResult(data={**result, "svg": svg}, files=files, message=verdicts)
