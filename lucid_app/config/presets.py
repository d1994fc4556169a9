"""Presets: partial YAML overrides on the dataclass defaults, with an optional ``base:`` chain.

A preset file holds only what differs from its base (the dataclass defaults when it names none), e.g.::

    base: paper
    prompt:
      text: A delicious hamburger
    guidance:
      delta_t: 50

Names resolve to ``presets/NAME.yaml`` in the repository; anything ending in ``.yaml``/``.yml`` or containing a
path separator is read as a file path. Loading is strict (see ``config.from_dict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lucid_app.config import ConfigError, TrainConfig, apply_overrides, deep_merge, from_dict, parse_yaml

# The repository (or source tree) root: presets/ and assets/ live beside the package.
REPO_ROOT = Path(__file__).resolve().parents[2]
PRESETS_DIR = REPO_ROOT / "presets"
_MAX_BASE_DEPTH = 16
# Files in presets/ that are libraries, not presets (``negatives.yaml``: see lucid_app/config/negatives.py).
LIBRARY_FILES = ("negatives",)


def list_presets(directory: Path = PRESETS_DIR) -> list[str]:
    """Names of the presets in ``directory`` (file stems, libraries excluded), sorted."""
    return sorted(p.stem for p in directory.glob("*.yaml") if p.stem not in LIBRARY_FILES)


def preset_path(name_or_path: str, directory: Path = PRESETS_DIR) -> Path:
    """Resolve a preset name or path to an existing file, or raise ConfigError naming the available presets."""
    looks_like_path = name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or "\\" in name_or_path
    path = Path(name_or_path) if looks_like_path else directory / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"preset {name_or_path!r} not found (looked for {path}); available presets: "
            f"{', '.join(list_presets(directory)) or '(none)'}"
        )
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    data = parse_yaml(path.read_text(encoding="utf-8"), f"preset {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path} must be a mapping of config sections, got {type(data).__name__}")
    return data


def preset_overrides(name_or_path: str, directory: Path = PRESETS_DIR) -> dict[str, Any]:
    """The merged partial mapping of a preset and its ``base:`` chain (bases first, the preset last)."""
    chain: list[dict[str, Any]] = []
    seen: list[Path] = []
    current: str | None = name_or_path
    search_dir = directory
    while current is not None:
        path = preset_path(current, search_dir).resolve()
        if path in seen:
            raise ConfigError(f"preset base cycle: {' -> '.join(str(p) for p in seen + [path])}")
        if len(seen) >= _MAX_BASE_DEPTH:
            raise ConfigError(f"preset base chain longer than {_MAX_BASE_DEPTH}: {name_or_path}")
        seen.append(path)
        data = _read_yaml(path)
        base = data.pop("base", None)
        if base is not None and not isinstance(base, str):
            raise ConfigError(f"preset {path}: 'base' must be a preset name or path, got {base!r}")
        chain.append(data)
        current = base
        # A relative base path is read next to the preset that names it; names still resolve in ``directory``.
        if base is not None and ("/" in base or base.endswith((".yaml", ".yml"))) and not Path(base).is_absolute():
            current = str(path.parent / base)
    merged: dict[str, Any] = {}
    for data in reversed(chain):
        merged = deep_merge(merged, data)
    return merged


def load_config(
    preset: str | None = None, overrides: list[str] | tuple[str, ...] = (), directory: Path = PRESETS_DIR
) -> TrainConfig:
    """Defaults ← preset (with its bases) ← ``key.sub=value`` overrides, all strict.

    Raises:
        ConfigError: unknown preset (naming the available ones), unknown key or wrong type (naming the field).
    """
    data = preset_overrides(preset, directory) if preset else {}
    try:
        config = from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"preset {preset}: {err}") from None
    return apply_overrides(config, overrides)
