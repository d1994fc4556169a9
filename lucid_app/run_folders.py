"""Run folders of the app under one outputs root: ``OUTPUTS/<session>/<run>/``, listed, reopened, checked.

A run's name is its path relative to the outputs root (``session/run``). Every name that comes from a user goes
through :func:`resolve_run`, which refuses anything outside the root, so the app never serves other files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lucid_app.config import ConfigError, from_yaml
from lucid_app.trainer import CONFIG_NAME, METRICS_NAME

# Output files of a run folder, by the names the UI and the API use.
RUN_FILES = {"ply": "model.ply", "video": "turntable.mp4", "config": CONFIG_NAME, "mesh": "mesh.glb",
             "metrics": METRICS_NAME}
MAX_LISTED_RUNS = 100


class JobError(ValueError):
    """An unknown job or run, or an action that does not apply to a job's state (the message says which)."""


@dataclass(frozen=True)
class RunInfo:
    """A run folder under the outputs root: ``name`` is its path relative to the root (``session/run``)."""

    name: str
    path: Path
    prompt: str
    files: dict[str, str]
    modified: float


def session_folder(session: str) -> str:
    """A safe folder name for a session id (Gradio's session hash); ``anonymous`` when empty."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "", session)[:32]
    return cleaned or "anonymous"


def run_files(run_dir: Path) -> dict[str, str]:
    """The run's output files that exist, by name (see ``RUN_FILES``)."""
    return {name: str(run_dir / file) for name, file in RUN_FILES.items() if (run_dir / file).is_file()}


def resolve_run(outputs: Path, name: str) -> Path:
    """The run folder ``name`` (relative to ``outputs``), checked to lie inside ``outputs`` and hold a config.

    Raises:
        JobError: the name leaves the outputs root, or is not a run folder.
    """
    root = Path(outputs).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise JobError(f"{name!r} is not a run folder of this app's outputs")
    if not (path / CONFIG_NAME).is_file():
        raise JobError(f"{name!r} is not a run folder (no {CONFIG_NAME})")
    return path


def list_runs(outputs: Path, limit: int = MAX_LISTED_RUNS) -> list[RunInfo]:
    """Run folders ``outputs/<session>/<run>/`` that hold a config, newest first."""
    root = Path(outputs).resolve()
    if not root.is_dir():
        return []
    configs = sorted(root.glob(f"*/*/{CONFIG_NAME}"), key=lambda p: p.stat().st_mtime, reverse=True)
    runs = []
    for config_path in configs[:limit]:
        run_dir = config_path.parent
        try:
            prompt = from_yaml(config_path.read_text(encoding="utf-8")).prompt.text
        except (ConfigError, OSError):
            prompt = ""
        runs.append(RunInfo(name=run_dir.relative_to(root).as_posix(), path=run_dir, prompt=prompt,
                            files=run_files(run_dir), modified=config_path.stat().st_mtime))
    return runs


def slug(text: str, max_len: int = 40) -> str:
    """A short lowercase file-name part of a prompt ("run" when nothing is left)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "run"
