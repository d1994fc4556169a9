"""Run folders of the app under one outputs root: ``OUTPUTS/<session>/<run>/``, listed, reopened, checked.

A run's name is its path relative to the outputs root (``session/run``). Every name that comes from a user goes
through :func:`resolve_run`, which accepts only names of that form and refuses anything outside the root, or
outside the asking session's own folder, so the app never serves other files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lucid_app.config import ConfigError, from_yaml
from lucid_app.io.run_layout import CONFIG_NAME, run_files

MAX_LISTED_RUNS = 100
# ``session/run``: the characters :func:`session_folder` and the job manager's run names use, nothing that starts
# with a dot, at most 32 + 1 + 128 characters.
RUN_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


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


def resolve_run(outputs: Path, name: str, owner: str | None = None) -> Path:
    """The run folder ``name`` (``session/run``, relative to ``outputs``), checked to lie inside ``outputs`` (and,
    when ``owner`` is given, inside that session's folder) and to hold a config.

    Raises:
        JobError: the name is not of the form ``session/run``, leaves the outputs root or the owner's folder, or is
            not a run folder. Another session's run gets the same message as a missing one.
    """
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        shown = name[:60] + "…" if isinstance(name, str) and len(name) > 60 else name
        raise JobError(f"{shown!r} is not a run name (SESSION/RUN, as the list of past runs shows them)")
    root = Path(outputs).resolve()
    path = (root / name).resolve()
    inside = root / session_folder(owner) if owner is not None else root
    if not path.is_relative_to(inside) or path == root or not (path / CONFIG_NAME).is_file():
        raise JobError(f"{name!r} is not a run folder of this session (no such run, or no {CONFIG_NAME})")
    return path


def list_runs(outputs: Path, limit: int = MAX_LISTED_RUNS, owner: str | None = None) -> list[RunInfo]:
    """Run folders ``outputs/<session>/<run>/`` that hold a config, newest first: ``owner``'s session only, or every
    session's when ``owner`` is None."""
    root = Path(outputs).resolve()
    if not root.is_dir():
        return []
    sessions = session_folder(owner) if owner is not None else "*"
    configs = sorted(root.glob(f"{sessions}/*/{CONFIG_NAME}"), key=lambda p: p.stat().st_mtime, reverse=True)
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


