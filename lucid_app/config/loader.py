"""The strict loader of the config schema: coercion, YAML, ``--set`` overrides and serialisation.

Validation lives here, once, for the CLI, the app and presets alike (DESIGN §6b). The loader (:func:`from_dict`,
:func:`apply_overrides`, :func:`from_yaml`, :func:`load_section`, presets) and :func:`replace` enforce the bounds each
field's annotation carries (:mod:`lucid_app.config.schema`), plus three rules for every field: floats are finite,
strings hold no control character but newline and tab, values nest at most :data:`MAX_NESTING` deep. Unknown keys are
rejected naming the valid ones; keys of :data:`REMOVED_KEYS` are ignored with a warning in files and mappings. Every
error is a :class:`ConfigError` of one line that starts with the field's path, e.g. ``optim.steps: must be >= 1, got
-1``.

Why our own coercer over pydantic (installed with gradio): pydantic would re-validate on every construction, and the
trainer derives a GuidanceConfig with the live δ_T each step, so a live control outside the schema would end a run
mid-way; its messages are several lines that we would re-format; lists-to-tuples, int-for-float and raw text for
``--set`` string fields would need custom validators anyway; and the core and the CLI would depend on a package only
gradio pins. ``annotated-types`` (pure Python, no dependencies, kept by the pydantic team) gives the bounds the
vocabulary pydantic itself reads, so the schema would carry over unchanged if we ever switch.

One module over ~400 lines on purpose: the coercer and the entry points share their private helpers (``_coerce`` and
``_from_mapping`` call each other; ``_field_types``, :data:`REMOVED_KEYS` and the message helpers serve the mapping,
override and :func:`replace` paths alike), so splitting it would only export them across a module line.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import reprlib
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, GroupedMetadata, Gt, Le, Lt, MaxLen

from lucid_app.config.schema import ConfigError, ControlChange, Ordered, PromptChange, TrainConfig

logger = logging.getLogger(__name__)

# Deepest nesting of lists/mappings accepted in any config input (the schema itself is 4 deep).
MAX_NESTING = 32

# Keys that configs written by older versions may hold: ignored with a warning when a file or mapping is loaded (so
# ``--resume`` of an old run works), an error with this reason when given as an override.
REMOVED_KEYS = {
    "model.device": "the device is chosen per run (--device, or the app's launch flag)",
    "prompt.overhead_suffix": "no overhead view prompt was ever used",
    "export.progress_video": "no progress video was ever written",
}


# ------------------------------------------------------------------------------------------------ validation

# Control characters (Unicode category Cc) other than tab and newline.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def _show(value: Any) -> str:
    """A short repr for messages: long strings and long or deep lists are abbreviated."""
    return _REPR.repr(value)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _constraints(metadata: tuple[Any, ...]) -> Iterator[Any]:
    for item in metadata:
        if isinstance(item, GroupedMetadata):
            yield from item
        else:
            yield item


def _check_constraint(value: Any, constraint: Any, where: str) -> None:
    """Raise ConfigError when ``value`` breaks one annotated-types ``constraint`` or :class:`Ordered`."""
    if isinstance(constraint, MaxLen):
        if len(value) > constraint.max_length:
            unit = "characters" if isinstance(value, str) else "items"
            raise ConfigError(f"{where}: must have at most {constraint.max_length} {unit}, got {len(value)}")
        return
    if isinstance(constraint, Ordered):
        if value[0] > value[1]:
            raise ConfigError(f"{where}: must be [low, high] with low <= high, got [{value[0]}, {value[1]}]")
        return
    if isinstance(constraint, Ge):
        ok, rule = value >= constraint.ge, f">= {constraint.ge}"
    elif isinstance(constraint, Gt):
        ok, rule = value > constraint.gt, f"> {constraint.gt}"
    elif isinstance(constraint, Le):
        ok, rule = value <= constraint.le, f"<= {constraint.le}"
    elif isinstance(constraint, Lt):
        ok, rule = value < constraint.lt, f"< {constraint.lt}"
    else:
        raise TypeError(f"{where}: the schema uses a constraint the loader does not know: {constraint!r}")
    if not ok:
        raise ConfigError(f"{where}: must be {rule}, got {_show(value)}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (type, then its constraints), converting lists to tuples and
    ints to floats; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *metadata = typing.get_args(tp)
        value = _coerce(value, base, where)
        for constraint in _constraints(tuple(metadata)):
            _check_constraint(value, constraint, where)
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {_show(value)}")
        return None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {_show(value)}")
        return _from_mapping(tp, value, where)
    if origin is Literal:
        options = typing.get_args(tp)
        if not any(value == option and type(value) is type(option) for option in options):
            raise ConfigError(f"{where}: {_show(value)} is not one of {list(options)}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({_show(value)})")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1:
            return _coerce(value, others[0], where)
        for arg in others:
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {_show(value)} does not match {_type_name(tp)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{where}: must be a finite number, got {_show(value)}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: must be a finite number, got {number}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
        bad = _CONTROL_CHARS.search(value)
        if bad:
            raise ConfigError(
                f"{where}: control character U+{ord(bad.group()):04X} at position {bad.start()} is not allowed "
                "(only newline and tab are)"
            )
        return value
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def _check_nesting(value: Any, where: str) -> None:
    """Raise ConfigError when lists and mappings in ``value`` nest deeper than :data:`MAX_NESTING`.

    Walked with a stack, not recursion; a list or mapping shared through YAML aliases is walked once.
    """
    stack = [(value, 1)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list, tuple)) or id(item) in seen:
            continue
        if depth > MAX_NESTING:
            raise ConfigError(f"{where}: nested deeper than {MAX_NESTING} levels")
        seen.add(id(item))
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> annotation, with its ``Annotated`` constraints (cached; do not mutate)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@functools.cache
def _section_names() -> dict[type, str]:
    """Config class -> the path its fields are named by in messages of :func:`replace`."""
    names = {tp: name for name, tp in _field_types(TrainConfig).items() if dataclasses.is_dataclass(tp)}
    names[PromptChange] = "prompt change"
    names[ControlChange] = "control change"
    return names


def _from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    types_ = _field_types(cls)
    removed = [key for key in data if _join(where, str(key)) in REMOVED_KEYS]
    for key in removed:
        path = _join(where, key)
        logger.warning("ignoring %s (an older config's key): %s", path, REMOVED_KEYS[path])
    unknown = sorted((str(key) for key in data if key not in types_ and key not in removed))
    if unknown:
        raise ConfigError(
            f"unknown key {_join(where, unknown[0])}; valid keys{' of ' + where if where else ''}: {', '.join(types_)}"
        )
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"missing key {_join(where, missing[0])}; required: {', '.join(required)}")
    kwargs = {name: _coerce(value, types_[name], _join(where, name))
              for name, value in data.items() if name not in removed}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        # Checks across fields (``__post_init__``) name the field relative to the class.
        raise ConfigError(_join(where, str(err))) from None


def load_section(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build one config dataclass ``cls`` (e.g. :class:`PromptChange`) strictly from a mapping.

    Raises:
        ConfigError: an unknown or missing key (naming the valid ones), a wrong type or a value out of bounds;
            messages start with ``where``.
    """
    return _coerce(data, cls, where)


def from_dict(data: dict[str, Any] | None, base: TrainConfig | None = None) -> TrainConfig:
    """Build a TrainConfig from a (partial, nested) mapping applied on ``base`` (defaults if None).

    Keys of :data:`REMOVED_KEYS` are ignored with a logged warning, so configs of older runs still load.

    Raises:
        ConfigError: on an unknown key (naming the valid keys), a value of the wrong type or out of bounds (naming
            the field), or nesting deeper than :data:`MAX_NESTING`.
    """
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    _check_nesting(data or {}, "config")
    merged = deep_merge(to_dict(base or TrainConfig()), data or {})
    try:
        return _from_mapping(TrainConfig, merged, "")
    except RecursionError:
        raise ConfigError(f"config: nested deeper than {MAX_NESTING} levels") from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``override`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists), ready for YAML or JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            # None means "unset" (PromptChange); leaving it out keeps the YAML short and loads back the same.
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if getattr(value, f.name) is not None}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)`` with every failure as a one-line ConfigError that starts with ``source``.

    Raises:
        ConfigError: invalid YAML, or lists/mappings nested deeper than :data:`MAX_NESTING`.
    """
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{source}: nested deeper than {MAX_NESTING} levels") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {' '.join(str(err).split())}") from None
    _check_nesting(data, source)
    return data


def from_yaml(text: str, base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from YAML text (e.g. a run's ``config.yaml``), as :func:`from_dict`."""
    return from_dict(parse_yaml(text, "config"), base)


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
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {_show(text)} must look like section.key=value")
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
    _check_nesting(value, key)
    return value


def _lookup_type(path: list[str]) -> Any:
    tp: Any = TrainConfig
    walked: list[str] = []
    for part in path:
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{'.'.join(walked)} has no sub-keys")
        types_ = _field_types(tp)
        if part not in types_:
            where, key = ".".join(walked), ".".join(walked + [part])
            if key in REMOVED_KEYS:
                raise ConfigError(f"{key} was removed: {REMOVED_KEYS[key]}")
            raise ConfigError(
                f"unknown key {key}; valid keys{' of ' + where if where else ''}: {', '.join(types_)}"
            )
        tp = types_[part]
        walked.append(part)
    return tp


def apply_overrides(config: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Apply ``["guidance.delta_t=50", "prompt.text=a cat"]`` to ``config`` strictly (values read as in
    :func:`parse_override`; later overrides win).

    Raises:
        ConfigError: a malformed override, an unknown or removed key, a wrong type or a value out of bounds.
    """
    data: dict[str, Any] = {}
    for text in overrides:
        data = deep_merge(data, parse_override(text))
    return from_dict(data, config)


def replace(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that checks each changed value of a config against the schema, as the loader does, so
    values set in code from a client (``--prompt``, the app's prompt box) meet the same limits. Derive new configs
    with it rather than mutate them.

    Raises:
        ConfigError: a changed value of the wrong type or out of bounds (the message names ``section.field``).
    """
    cls = type(config)
    if not (dataclasses.is_dataclass(cls) and cls.__module__ == TrainConfig.__module__):
        return dataclasses.replace(config, **changes)
    types_ = _field_types(cls)
    where = _section_names().get(cls, "")
    checked = {name: _coerce(value, types_[name], _join(where, name)) if name in types_ else value
               for name, value in changes.items()}
    try:
        return dataclasses.replace(config, **checked)
    except ConfigError as err:
        raise ConfigError(_join(where, str(err))) from None
