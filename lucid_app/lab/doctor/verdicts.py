"""The doctor's verdicts, remembered per model, so that a run can warn before it trains with a method that drifts.

A doctor run (the ``doctor`` command, the app's "Check this model" panel, ``bench quality``) records its summary with
:func:`remember`; :func:`drift_notice` reads it back before training. Where a verdict lives:

1. a learned-prior folder's own ``doctor.json`` (shipped with the folder, measured on its dataset's test views:
   ``python -m lucid_app doctor --model PRIOR --dataset DATASET --prompt CAPTION --out PRIOR``);
2. otherwise the user's cache, ``$LUCID_CACHE_DIR/doctor/`` (default ``~/.cache/lucid-app/doctor/``), one JSON file per
   model named by a hash of its reference (a hub id, or an absolute path).

A verdict is a fact about the model and the guidance settings it was measured with (CFG scale, δ_T, inversion): the
notice names them, and a run with other settings still gets it, as a hint to check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from lucid_app.io.files import write_text
from lucid_app.priors.learned_folder import is_prior_folder

logger = logging.getLogger(__name__)

CACHE_ENV = "LUCID_CACHE_DIR"
VERDICT_NAME = "doctor.json"
# What a remembered summary keeps (the measurement's headline; the raw per-seed values stay in the run's own file).
KEPT_KEYS = ("model", "prompt", "t", "methods", "restoring", "gain", "pull", "offset", "verdict", "settings",
             "references")


def cache_dir() -> Path:
    """``$LUCID_CACHE_DIR/doctor`` (default ``~/.cache/lucid-app/doctor``)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lucid-app"
    return Path(root).expanduser() / "doctor"


def verdict_path(model: str) -> Path:
    """Where :func:`remember` writes ``model``'s verdict: the user's cache (module docstring, 2)."""
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:20]
    return cache_dir() / f"{digest}.json"


def remember(model: str, result: dict[str, Any]) -> Path | None:
    """Keep a doctor summary (``lab.doctor.report.summary``) for ``model`` in the cache; None when the cache cannot
    be written (logged, never an error: the measurement itself was already reported)."""
    path = verdict_path(model)
    kept = {key: result[key] for key in KEPT_KEYS if key in result}
    try:
        write_text(path, json.dumps({**kept, "model": model}, indent=1) + "\n")
    except OSError as err:
        logger.warning("doctor verdict not cached (%s): %s", path.parent, err)
        return None
    return path


def known_verdict(model: str) -> dict[str, Any] | None:
    """The remembered summary for ``model`` (the folder's own ``doctor.json`` first, then the cache), or None."""
    folder_file = Path(model) / VERDICT_NAME
    for path in ((folder_file,) if is_prior_folder(model) else ()) + (verdict_path(model),):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("verdict"), dict):
            return data
    return None


def drift_notice(model: str, method: str) -> str | None:
    """One line when the doctor measured that ``method`` drifts on ``model`` (None otherwise, and when unknown)."""
    known = known_verdict(model)
    if known is None or known["verdict"].get(method) != "drifts":
        return None
    restoring = known.get("restoring", {}).get(method, {})
    worst = min(restoring.items(), key=lambda item: item[1], default=None)
    where = f" (restoring coefficient {worst[1]:+.2f} at t = {worst[0]})" if worst else ""
    settings = known.get("settings", {})
    measured = ", ".join(f"{key} {settings[key]}" for key in ("guidance_scale", "delta_t") if key in settings)
    others = [m for m, v in known["verdict"].items() if v == "restores"]
    advice = f"; {', '.join(others).upper()} restores there" if others else ""
    return (f"{method.upper()} is known to drift on this model{where}, measured by `python -m lucid_app doctor`"
            f"{' with ' + measured if measured else ''}{advice}")
