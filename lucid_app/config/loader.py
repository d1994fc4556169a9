"""The strict loader of the config schema: mappings, YAML, serialisation and :func:`replace`.

Validation lives in one place, for the CLI, the app and presets alike (DESIGN §6b): the loader (:func:`from_dict`,
:func:`from_yaml`, :func:`load_section`, presets), the ``--set`` overrides (:mod:`lucid_app.config.overrides`) and
:func:`replace` all check values with :func:`lucid_app.config.coerce.coerce`, which enforces the bounds each field's
annotation carries (:mod:`lucid_app.config.schema`) and says why the coercer is our own. Every error is a
:class:`ConfigError` of one line that starts with the field's path, e.g. ``optim.steps: must be >= 1, got -1``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import yaml

from lucid_app.config.coerce import MAX_NESTING, check_nesting, coerce, field_types, from_mapping, join_path
from lucid_app.config.schema import ConfigError, ControlChange, PromptChange, TrainConfig


@functools.cache
def _section_names() -> dict[type, str]:
    """Config class -> the path its fields are named by in messages of :func:`replace`."""
    names = {tp: name for name, tp in field_types(TrainConfig).items() if dataclasses.is_dataclass(tp)}
    names[PromptChange] = "prompt change"
    names[ControlChange] = "control change"
    return names


def load_section(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build one config dataclass ``cls`` (e.g. :class:`PromptChange`) strictly from a mapping.

    Raises:
        ConfigError: an unknown or missing key (naming the valid ones), a wrong type or a value out of bounds;
            messages start with ``where``.
    """
    return coerce(data, cls, where)


def check_value(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against a schema annotation (a bound type such as ``Steps`` or ``FovyRad``, or a field's
    annotation) as the loader checks a field: the same type rules, finiteness and bounds, so a command-line flag or a
    form field that is not a config key meets the schema's limits.

    Raises:
        ConfigError: a wrong type or a value out of bounds; the message starts with ``where``.
    """
    return coerce(value, annotation, where)


def from_dict(data: dict[str, Any] | None, base: TrainConfig | None = None) -> TrainConfig:
    """Build a TrainConfig from a (partial, nested) mapping applied on ``base`` (defaults if None).

    Keys of :data:`REMOVED_KEYS` are ignored with a logged warning, so configs of older runs still load.

    Raises:
        ConfigError: on an unknown key (naming the valid keys), a value of the wrong type or out of bounds (naming
            the field), or nesting deeper than :data:`MAX_NESTING`.
    """
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    check_nesting(data or {}, "config")
    merged = deep_merge(to_dict(base or TrainConfig()), data or {})
    try:
        return from_mapping(TrainConfig, merged, "")
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
    check_nesting(data, source)
    return data


def from_yaml(text: str, base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from YAML text (e.g. a run's ``config.yaml``), as :func:`from_dict`."""
    return from_dict(parse_yaml(text, "config"), base)


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
    types_ = field_types(cls)
    where = _section_names().get(cls, "")
    checked = {name: coerce(value, types_[name], join_path(where, name)) if name in types_ else value
               for name, value in changes.items()}
    try:
        return dataclasses.replace(config, **checked)
    except ConfigError as err:
        raise ConfigError(join_path(where, str(err))) from None
