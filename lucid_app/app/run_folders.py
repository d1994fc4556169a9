"""Run folders of the app under one outputs root: ``OUTPUTS/<owner>/<run>/``, listed, reopened, checked.

``<owner>`` is the owner id of whoever started the run (:mod:`lucid_app.app.identity`). A client names its own runs
by the run folder's name alone (``RUN``); with ``--shared-runs`` it also sees other owners' runs as ``OWNER/RUN``
(viewing only). Every name that comes from a user goes through :func:`resolve_run`, which accepts only names of those
forms and refuses anything outside the root, or outside the asking owner's folder unless runs are shared, so the app
never serves other files. Each owner's negative-prompt library lives in its folder (:func:`user_negatives_path`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lucid_app.config import ConfigError, from_yaml
from lucid_app.config.negatives import USER_NEGATIVES_NAME
from lucid_app.io.run_layout import CONFIG_NAME, run_files

MAX_LISTED_RUNS = 100
# A run folder's name: the characters the job manager's run names use, nothing that starts with a dot, at most 128.
_RUN = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"
# ``RUN`` (the asker's own) or ``OWNER/RUN``: the characters :func:`session_folder` keeps, at most 32 + 1 + 128.
RUN_NAME = re.compile(rf"(?:[A-Za-z0-9_-]{{1,32}}/)?{_RUN}")


class JobError(ValueError):
    """An unknown job or run, or an action that does not apply to a job's state (the message says which)."""


@dataclass(frozen=True)
class RunInfo:
    """A run folder under the outputs root: ``name`` is how its asker names it (``RUN`` or ``OWNER/RUN``)."""

    name: str
    path: Path
    prompt: str
    files: dict[str, str]
    modified: float


def session_folder(session: str) -> str:
    """A safe folder name for an owner id (:mod:`lucid_app.app.identity`); ``anonymous`` when empty."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "", session)[:32]
    return cleaned or "anonymous"


def user_negatives_path(outputs: Path, owner: str) -> Path:
    """The owner's own negative-prompt library: ``OUTPUTS/<owner>/negatives.yaml``."""
    return Path(outputs).resolve() / session_folder(owner) / USER_NEGATIVES_NAME


def resolve_run(outputs: Path, name: str, owner: str | None = None, shared: bool = False) -> Path:
    """The run folder ``name`` names, checked to lie inside ``outputs`` and to hold a config.

    ``name`` is ``RUN`` (a run of ``owner``) or ``OWNER/RUN`` (relative to ``outputs``: any owner's when ``owner`` is
    None or ``shared``, else only ``owner``'s own).

    Raises:
        JobError: the name is of neither form, leaves the outputs root or the owner's folder, or is not a run folder.
            Another owner's run gets the same message as a missing one.
    """
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        shown = name[:60] + "…" if isinstance(name, str) and len(name) > 60 else name
        raise JobError(f"{shown!r} is not a run name (as the list of past runs shows them)")
    root = Path(outputs).resolve()
    if "/" not in name:
        if owner is None:
            raise JobError(f"{name!r} is not a run name (OWNER/RUN)")
        name = f"{session_folder(owner)}/{name}"
    path = (root / name).resolve()
    inside = root / session_folder(owner) if owner is not None and not shared else root
    if not path.is_relative_to(inside) or path == root or not (path / CONFIG_NAME).is_file():
        raise JobError(f"{name.split('/')[-1]!r} is not a run folder of yours (no such run, or no {CONFIG_NAME})")
    return path


def list_runs(outputs: Path, limit: int = MAX_LISTED_RUNS, owner: str | None = None,
              shared: bool = False) -> list[RunInfo]:
    """Run folders ``outputs/<owner>/<run>/`` that hold a config, newest first.

    With ``owner``: that owner's runs, named ``RUN``, and with ``shared`` every other owner's too, named
    ``OWNER/RUN``. Without: every run, named ``OWNER/RUN``.
    """
    root = Path(outputs).resolve()
    if not root.is_dir():
        return []
    own = session_folder(owner) if owner is not None else None
    owners = own if own is not None and not shared else "*"
    configs = sorted(root.glob(f"{owners}/*/{CONFIG_NAME}"), key=lambda p: p.stat().st_mtime, reverse=True)
    runs = []
    for config_path in configs[:limit]:
        run_dir = config_path.parent
        try:
            prompt = from_yaml(config_path.read_text(encoding="utf-8")).prompt.text
        except (ConfigError, OSError):
            prompt = ""
        name = run_dir.name if run_dir.parent.name == own else run_dir.relative_to(root).as_posix()
        runs.append(RunInfo(name=name, path=run_dir, prompt=prompt, files=run_files(run_dir),
                            modified=config_path.stat().st_mtime))
    return runs
