"""The named negative-prompt library ``presets/negatives.yaml`` and ``@NAME`` references to it.

A config's ``prompt.negative`` is either literal text or ``"@NAME"``, a reference to the library (e.g.
``"@paper_dark"``). References are resolved once, when a run's config is resolved (:func:`lucid_app.runs.resolve_config`
calls :func:`resolve_negative`), so presets, ``--set prompt.negative=@NAME``, ``--negative @NAME`` and the UI field
all accept them, and the trainer only ever sees text. An unknown name is a :class:`ConfigError` naming the library.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lucid_app.config import ConfigError, TrainConfig, replace

NEGATIVES_FILE = Path(__file__).resolve().parent.parent / "presets" / "negatives.yaml"
REFERENCE_PREFIX = "@"


def load_negatives(path: Path = NEGATIVES_FILE) -> dict[str, str]:
    """The library as {name: text}, in file order; ConfigError if the file is not a mapping of strings."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"negative-prompt library {path} cannot be read: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"negative-prompt library {path} must map names to strings")
    return dict(data)


def list_negatives(path: Path = NEGATIVES_FILE) -> list[str]:
    """Names of the library's negative prompts, in file order."""
    return list(load_negatives(path))


def negative_text(name_or_text: str, path: Path = NEGATIVES_FILE) -> str:
    """``"@NAME"`` → the library's text for NAME; any other string is literal text and returned unchanged.

    Raises:
        ConfigError: ``"@NAME"`` with a NAME not in the library (the message lists the names).
    """
    if not name_or_text.startswith(REFERENCE_PREFIX):
        return name_or_text
    name = name_or_text[len(REFERENCE_PREFIX):].strip()
    library = load_negatives(path)
    if name not in library:
        raise ConfigError(
            f"prompt.negative: unknown negative prompt {name_or_text!r}; the library ({path.name}) has: "
            + ", ".join(f"@{n}" for n in library)
        )
    return library[name]


def resolve_negative(config: TrainConfig, path: Path = NEGATIVES_FILE) -> TrainConfig:
    """``config`` with an ``@NAME`` ``prompt.negative`` replaced by its text (unchanged otherwise)."""
    text = negative_text(config.prompt.negative, path)
    if text == config.prompt.negative:
        return config
    return replace(config, prompt=replace(config.prompt, negative=text))
