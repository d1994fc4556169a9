"""``--set section.key=value`` overrides: each value read for the type of the field it sets, then applied strictly.

:func:`parse_override` lists the reading rules; :func:`apply_overrides` merges a list of them onto a config through
:func:`lucid_app.config.loader.from_dict`, so they meet the same checks as a YAML file.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Annotated, Any, Literal

import yaml

from lucid_app.config.coerce import MAX_NESTING, REMOVED_KEYS, check_nesting, field_types, show, unknown_key
from lucid_app.config.loader import deep_merge, from_dict
from lucid_app.config.schema import ConfigError, TrainConfig

# Most overrides in one list, and most characters in one: the schema has fewer keys than MAX_OVERRIDES (a longer list
# repeats keys), and the longest valid value (64 textual-inversion paths of MAX_PATH_CHARS) is shorter than
# MAX_OVERRIDE_CHARS, so within it a value too long for its field is named by the field's own check.
MAX_OVERRIDES = 256
MAX_OVERRIDE_CHARS = 300_000


def parse_override(text: str) -> dict[str, Any]:
    """Parse ``"a.b=value"`` into ``{"a": {"b": value}}``, reading the value for the type of the field it sets.

    - Text fields (``str``, ``str | None``, a ``Literal`` of strings): the text after ``=`` as written, surrounding
      whitespace dropped; ``a cat: wearing a hat``, ``#7`` and ``[blurry]`` stay text. A value in double quotes is
      read as a JSON string and one in single quotes as a YAML one (to keep surrounding spaces, or write escapes).
    - Lists of text (``model.textual_inversion``): a YAML list when the value starts with ``[``, else one item
      (empty: no items).
    - Everything else: YAML (``0.5``, ``[1, 2]``, ``true``, ``{delta_t: 50}`` for a whole section); text that is
      not valid YAML is kept as text, for the type check to name the field.

    Raises:
        ConfigError: not ``key=value``, an unknown key (naming the valid ones), or a value nested too deeply.
    """
    if len(text) > MAX_OVERRIDE_CHARS:
        raise ConfigError(f"override {show(text)} has {len(text)} characters; at most {MAX_OVERRIDE_CHARS} are "
                          "allowed (put long values in a preset file)")
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {show(text)} must look like section.key=value")
    path = key.split(".")
    value = _override_value(raw.strip(), _lookup_type(path), key)
    node: dict[str, Any] = {}
    cursor = node
    for part in path[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[path[-1]] = value
    return node


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_text(tp: Any) -> bool:
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return all(isinstance(option, str) for option in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_is_text(arg) for arg in typing.get_args(tp) if arg is not type(None))
    return tp is str


def _is_text_list(tp: Any) -> bool:
    tp = _strip_annotated(tp)
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis and _is_text(args[0])


def _unquote(raw: str) -> str:
    """``raw``, or the string it holds when the whole of it is one JSON ``"..."`` or YAML ``'...'`` string."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return raw
        return value if isinstance(value, str) else raw
    if len(raw) >= 2 and raw[0] == raw[-1] == "'" and "'" not in raw[1:-1].replace("''", ""):
        return raw[1:-1].replace("''", "'")
    return raw


def _override_value(raw: str, tp: Any, key: str) -> Any:
    """The value of one override read for its field's annotation ``tp`` (rules in :func:`parse_override`)."""
    if _is_text(tp):
        return _unquote(raw)
    if _is_text_list(tp) and not raw.startswith("["):
        return [_unquote(raw)] if raw else []
    if not raw:
        return ""
    try:
        value = yaml.safe_load(raw)
    except RecursionError:
        raise ConfigError(f"{key}: nested deeper than {MAX_NESTING} levels") from None
    except yaml.YAMLError:
        return raw
    check_nesting(value, key)
    return value


def _lookup_type(path: list[str]) -> Any:
    tp: Any = TrainConfig
    walked: list[str] = []
    for part in path:
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{'.'.join(walked)} has no sub-keys")
        types_ = field_types(tp)
        if part not in types_:
            where, key = ".".join(walked), ".".join(walked + [part])
            if key in REMOVED_KEYS:
                raise ConfigError(f"{key} was removed: {REMOVED_KEYS[key]}")
            raise unknown_key(where, part, types_)
        tp = types_[part]
        walked.append(part)
    return tp


def check_override_count(count: int) -> None:
    """Raise ConfigError when ``count`` overrides are more than :data:`MAX_OVERRIDES`."""
    if count > MAX_OVERRIDES:
        raise ConfigError(f"{count} overrides; at most {MAX_OVERRIDES} are allowed (the config has fewer keys than "
                          "that)")


def apply_overrides(config: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Apply ``["guidance.delta_t=50", "prompt.text=a cat"]`` to ``config`` strictly (values read as in
    :func:`parse_override`; later overrides win).

    Raises:
        ConfigError: more than :data:`MAX_OVERRIDES` overrides, one longer than :data:`MAX_OVERRIDE_CHARS`, a
            malformed override, an unknown or removed key, a wrong type or a value out of bounds.
    """
    check_override_count(len(overrides))
    data: dict[str, Any] = {}
    for text in overrides:
        data = deep_merge(data, parse_override(text))
    return from_dict(data, config)
