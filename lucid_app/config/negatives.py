"""The named negative-prompt library ``presets/negatives.yaml`` and ``@NAME`` references to it.

A config's ``prompt.negative`` is either literal text or ``"@NAME"``, a reference to the library (e.g.
``"@paper_dark"``). References are resolved once, when a run's config is resolved
(:func:`lucid_app.train.prepare.resolve_config` calls :func:`resolve_negative`), so presets,
``--set prompt.negative=@NAME``, ``--negative @NAME`` and the UI field all accept them, and the trainer only ever sees
text. An unknown name is a :class:`ConfigError` naming the library.

Users add their own negatives to a separate *user library* (the app keeps one per owner, in the owner's folder of its
outputs root): the shipped file is never written, a user name never shadows a shipped one, :func:`merged_negatives`
lists both, and a user library holds at most :data:`MAX_USER_NEGATIVES` entries and :data:`MAX_USER_LIBRARY_BYTES`.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import yaml

from lucid_app.config import ConfigError, PromptChange, TrainConfig, replace
from lucid_app.config.presets import PRESETS_DIR
from lucid_app.io.files import write_text

NEGATIVES_FILE = PRESETS_DIR / "negatives.yaml"
USER_NEGATIVES_NAME = "negatives.yaml"  # the app's user libraries: OUTPUTS/<owner>/negatives.yaml
# Caps of one user library (a few dozen paper-length negatives fit easily).
MAX_USER_NEGATIVES = 100
MAX_USER_LIBRARY_BYTES = 64 * 1024
REFERENCE_PREFIX = "@"
# Names are written after "@" in configs and on command lines: keep them to one plain word.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SAVE_LOCK = threading.Lock()  # read-modify-write of a user library from concurrent sessions


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
    return library_text(name_or_text, load_negatives(path), path.name)


def library_text(name_or_text: str, library: dict[str, str], source: str = NEGATIVES_FILE.name) -> str:
    """Like :func:`negative_text` over an already loaded ``library`` (e.g. :func:`merged_negatives`).

    Raises:
        ConfigError: ``"@NAME"`` with a NAME not in ``library``; ``source`` names it in the message.
    """
    if not name_or_text.startswith(REFERENCE_PREFIX):
        return name_or_text
    name = name_or_text[len(REFERENCE_PREFIX):].strip()
    if name not in library:
        raise ConfigError(
            f"prompt.negative: unknown negative prompt {name_or_text!r}; the library ({source}) has: "
            + ", ".join(f"@{n}" for n in library)
        )
    return library[name]


def merged_negatives(user_path: Path | None, path: Path = NEGATIVES_FILE) -> dict[str, str]:
    """The shipped library followed by the user library at ``user_path`` (absent file = empty); a user entry
    never replaces a shipped one of the same name."""
    library = load_negatives(path)
    if user_path is not None and Path(user_path).is_file():
        for name, text in load_negatives(Path(user_path)).items():
            library.setdefault(name, text)
    return library


def save_negative(name: str, text: str, user_path: Path, path: Path = NEGATIVES_FILE,
                  max_entries: int = MAX_USER_NEGATIVES, max_bytes: int = MAX_USER_LIBRARY_BYTES) -> dict[str, str]:
    """Add (or replace) the user negative ``name`` in the user library ``user_path``; returns the user library.

    Raises:
        ConfigError: an empty or malformed name (letters, digits, ``_`` and ``-`` only), a name of the shipped
            library (it cannot be overwritten), empty text, an unreadable user library, or a library that would hold
            more than ``max_entries`` negatives or ``max_bytes`` (one line saying which, and what to do).
    """
    name = name.strip().removeprefix(REFERENCE_PREFIX)
    text = text.strip()
    if not name:
        raise ConfigError("give the new negative prompt a name")
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"negative name {name!r}: use up to 64 letters, digits, '_' or '-' (no spaces)")
    if name in load_negatives(path):
        raise ConfigError(f"{name!r} is a built-in negative prompt ({path.name}) and cannot be overwritten; "
                          "choose another name")
    if not text:
        raise ConfigError("the negative prompt text is empty: nothing to save")
    user_path = Path(user_path)
    with _SAVE_LOCK:
        library = load_negatives(user_path) if user_path.is_file() else {}
        if name not in library and len(library) >= max_entries:
            raise ConfigError(f"your negative-prompt library is full ({max_entries} entries): save under an existing "
                              "name to replace it")
        library[name] = text
        content = yaml.safe_dump(library, sort_keys=False, allow_unicode=True, width=1_000_000)
        if len(content.encode("utf-8")) > max_bytes:
            raise ConfigError(f"your negative-prompt library would exceed {max_bytes // 1024} KB: save a shorter text, "
                              "or under an existing name to replace it")
        write_text(user_path, content)
    return library


def resolve_schedule(schedule: tuple[PromptChange, ...], path: Path = NEGATIVES_FILE) -> tuple[PromptChange, ...]:
    """``schedule`` with every ``@NAME`` negative replaced by its library text (ConfigError for an unknown name)."""
    return tuple(replace(c, negative=negative_text(c.negative, path)) if c.negative is not None else c
                 for c in schedule)


def resolve_negative(config: TrainConfig, path: Path = NEGATIVES_FILE) -> TrainConfig:
    """``config`` with ``@NAME`` negatives (``prompt.negative`` and the ``prompt_schedule``'s) replaced by their
    text (unchanged otherwise)."""
    text = negative_text(config.prompt.negative, path)
    schedule = resolve_schedule(config.prompt_schedule, path)
    if text == config.prompt.negative and schedule == config.prompt_schedule:
        return config
    return replace(config, prompt=replace(config.prompt, negative=text), prompt_schedule=schedule)
