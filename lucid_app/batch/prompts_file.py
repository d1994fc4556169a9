"""The prompts file of ``batch``: text, YAML or CSV, each entry checked with its line number before anything runs.

Formats (by suffix; anything but ``.yaml``/``.yml``/``.csv`` is text):

* text: one prompt a line, or ``prompt | preset | key=value key=value ...`` (an empty preset field keeps the
  command's ``--preset``; settings are split like a shell line, so ``prompt.negative="a b"`` works); blank lines and
  lines starting with ``#`` are skipped.
* YAML: a list whose items are a prompt, or a mapping ``{prompt: ..., preset: ..., set: [key=value, ...]}``
  (``set`` may also be a mapping ``{key: value}``).
* CSV: a header naming ``prompt`` and optionally ``preset`` and ``set`` (settings as in the text format).

Each entry's settings are the command's ``--set`` then the entry's own, resolved through the one config schema
(:func:`lucid_app.train.prepare.resolve_config`); an entry that does not resolve is a :class:`BadLine` with its line
number.
"""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lucid_app.config import ConfigError, TrainConfig
from lucid_app.io.run_layout import slug
from lucid_app.train.prepare import resolve_config

YAML_SUFFIXES = (".yaml", ".yml")
ENTRY_KEYS = ("prompt", "preset", "set")


@dataclass(frozen=True)
class BatchEntry:
    """One valid prompt of the batch: its line, resolved config and run folder name (unique in the batch)."""

    line: int
    prompt: str
    preset: str | None
    overrides: tuple[str, ...]
    config: TrainConfig
    name: str


@dataclass(frozen=True)
class BadLine:
    """An entry that cannot run, and why."""

    line: int
    text: str
    message: str


def read_batch(path: str | Path, preset: str | None = None, overrides: tuple[str, ...] | list[str] = ()
               ) -> tuple[list[BatchEntry], list[BadLine]]:
    """Parse and check every entry of a prompts file.

    Args:
        path: the prompts file.
        preset: the command's ``--preset`` (entries may name their own).
        overrides: the command's ``--set`` values, applied before each entry's own.

    Returns:
        (the valid entries in file order, each with a unique folder name: the prompt's slug, ``-2``, ``-3``... for
        repeats; the bad entries with their line numbers).

    Raises:
        OSError: the file cannot be read. ConfigError: the file as a whole cannot be parsed (not a YAML list, a
            CSV without a ``prompt`` column).
    """
    path = Path(path).expanduser()
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    raw = _yaml_entries(text) if suffix in YAML_SUFFIXES else _csv_entries(text) if suffix == ".csv" else \
        _text_entries(text)
    entries: list[BatchEntry] = []
    bad: list[BadLine] = []
    taken: set[str] = set()
    for line, shown, fields in raw:
        if isinstance(fields, str):
            bad.append(BadLine(line, shown, fields))
            continue
        prompt, entry_preset, entry_sets = fields
        chosen = entry_preset or preset
        try:
            config = resolve_config(chosen, prompt, overrides=[*overrides, *entry_sets])
        except ConfigError as err:
            bad.append(BadLine(line, shown, str(err)))
            continue
        name = _unique(slug(prompt), taken)
        entries.append(BatchEntry(line, prompt, chosen, tuple(entry_sets), config, name))
    return entries, bad


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


# Each parser yields (line number, the entry as written, (prompt, preset, settings) or an error message).
_Raw = tuple[int, str, "tuple[str, str | None, list[str]] | str"]


def _text_entries(text: str) -> list[_Raw]:
    out: list[_Raw] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = [part.strip() for part in stripped.split("|", 2)]
        out.append((number, stripped, _fields(parts[0], parts[1] if len(parts) > 1 else "",
                                              parts[2] if len(parts) > 2 else "")))
    return out


def _fields(prompt: Any, preset: Any, settings: Any) -> tuple[str, str | None, list[str]] | str:
    """(prompt, preset or None, settings) of one entry, or what is wrong with it."""
    if not isinstance(prompt, str) or not prompt.strip():
        return "no prompt (the first field of an entry is the prompt)"
    if preset is not None and not isinstance(preset, str):
        return f"the preset must be a name or a YAML path, got {preset!r}"
    if isinstance(settings, dict):
        sets = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                for key, value in settings.items()]
    elif isinstance(settings, list) and all(isinstance(item, str) for item in settings):
        sets = list(settings)
    elif isinstance(settings, str):
        try:
            sets = shlex.split(settings)
        except ValueError as err:
            return f"settings {settings!r}: {err}"
    else:
        return f"settings must be key=value strings, got {settings!r}"
    not_pairs = [item for item in sets if "=" not in item]
    if not_pairs:
        return f"settings must be key=value, got {not_pairs[0]!r}"
    return prompt.strip(), (preset or "").strip() or None, sets


def _yaml_entries(text: str) -> list[_Raw]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None or not isinstance(root, yaml.SequenceNode):
            raise ConfigError("a YAML prompts file must be a list of prompts or {prompt, preset, set} mappings")
        out: list[_Raw] = []
        for node in root.value:
            line = node.start_mark.line + 1
            value = loader.construct_object(node, deep=True)
            shown = str(value)
            if isinstance(value, str):
                out.append((line, shown, _fields(value, None, [])))
            elif isinstance(value, dict):
                unknown = sorted(set(map(str, value)) - set(ENTRY_KEYS))
                out.append((line, shown, f"unknown key {unknown[0]!r}; valid: {', '.join(ENTRY_KEYS)}" if unknown
                            else _fields(value.get("prompt"), value.get("preset"), value.get("set", []))))
            else:
                out.append((line, shown, "an entry is a prompt or a {prompt, preset, set} mapping"))
        return out
    except yaml.YAMLError as err:
        raise ConfigError(f"the prompts file is not valid YAML: {err}") from None
    finally:
        loader.dispose()


def _csv_entries(text: str) -> list[_Raw]:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    if "prompt" not in columns:
        raise ConfigError(f"a CSV prompts file needs a header with a 'prompt' column, got {columns}")
    out: list[_Raw] = []
    for row in reader:
        row = {(k or "").strip(): v for k, v in row.items()}
        line = reader.line_num
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        shown = ",".join(v or "" for v in row.values() if isinstance(v, str))
        out.append((line, shown, _fields(row.get("prompt") or "", row.get("preset") or "", row.get("set") or "")))
    return out


__all__ = ["BadLine", "BatchEntry", "read_batch"]
