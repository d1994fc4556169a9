"""The strict coercer under :mod:`lucid_app.config.loader`: a value checked against a field's annotation.

Every field's type, then the bounds its annotation carries (:mod:`lucid_app.config.schema`), plus three rules for
every field: floats are finite, strings hold no control character but newline and tab, values nest at most
:data:`MAX_NESTING` deep. Unknown keys are rejected naming the valid ones; keys of :data:`REMOVED_KEYS` are ignored
with a warning in files and mappings. Every error is a :class:`ConfigError` of one line that starts with the field's
path, e.g. ``optim.steps: must be >= 1, got -1``. The loader, the overrides and ``replace`` all go through
:func:`coerce`; nothing outside :mod:`lucid_app.config` calls it.

Why our own coercer over pydantic (installed with gradio): pydantic would re-validate on every construction, and the
trainer derives a GuidanceConfig with the live δ_T each step, so a live control outside the schema would end a run
mid-way; its messages are several lines that we would re-format; lists-to-tuples, int-for-float and raw text for
``--set`` string fields would need custom validators anyway; and the core and the CLI would depend on a package only
gradio pins. ``annotated-types`` (pure Python, no dependencies, kept by the pydantic team) gives the bounds the
vocabulary pydantic itself reads, so the schema would carry over unchanged if we ever switch.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, Literal

from annotated_types import Ge, GroupedMetadata, Gt, Le, Lt, MaxLen

from lucid_app.config.schema import ConfigError, Ordered

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


# Control characters (Unicode category Cc) other than tab and newline.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def show(value: Any) -> str:
    """A short repr for messages: long strings and long or deep lists are abbreviated."""
    return _REPR.repr(value)


def join_path(where: str, name: str) -> str:
    """``where.name``, or ``name`` at the top level."""
    return f"{where}.{name}" if where else name


def unknown_key(where: str, key: str, valid: Iterable[str]) -> ConfigError:
    """The error for ``key`` in the section ``where`` ("" at the top), naming the section's valid keys."""
    of = f" of {where}" if where else ""
    return ConfigError(f"unknown key {join_path(where, key)}; valid keys{of}: {', '.join(valid)}")


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
        raise ConfigError(f"{where}: must be {rule}, got {show(value)}")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (type, then its constraints), converting lists to tuples and
    ints to floats; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *metadata = typing.get_args(tp)
        value = coerce(value, base, where)
        for constraint in _constraints(tuple(metadata)):
            _check_constraint(value, constraint, where)
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {show(value)}")
        return None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {show(value)}")
        return from_mapping(tp, value, where)
    if origin is Literal:
        options = typing.get_args(tp)
        if not any(value == option and type(value) is type(option) for option in options):
            raise ConfigError(f"{where}: {show(value)} is not one of {list(options)}")
        return value
    if origin is tuple:
        return _coerce_tuple(value, tp, where)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, where)
    for scalar, check in _SCALARS:
        if tp is scalar:
            return check(value, where)
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def _coerce_tuple(value: Any, tp: Any, where: str) -> tuple[Any, ...]:
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {show(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({show(value)})")
    return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def _coerce_union(value: Any, tp: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    others = [arg for arg in args if arg is not type(None)]
    if len(others) == 1:
        return coerce(value, others[0], where)
    for arg in others:
        try:
            return coerce(value, arg, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where}: {show(value)} does not match {_type_name(tp)}")


def _coerce_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {show(value)}")
    return value


def _coerce_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {show(value)}")
    return value


def _coerce_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"{where}: must be a finite number, got {show(value)}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: must be a finite number, got {number}")
    return number


def _coerce_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {show(value)}")
    bad = _CONTROL_CHARS.search(value)
    if bad:
        raise ConfigError(
            f"{where}: control character U+{ord(bad.group()):04X} at position {bad.start()} is not allowed "
            "(only newline and tab are)"
        )
    return value


# The scalar field types and their checks, matched by identity (``bool`` before ``int``: a bool is an int).
_SCALARS: tuple[tuple[type, Callable[[Any, str], Any]], ...] = (
    (bool, _coerce_bool), (int, _coerce_int), (float, _coerce_float), (str, _coerce_str),
)


def check_nesting(value: Any, where: str) -> None:
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
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> annotation, with its ``Annotated`` constraints (cached; do not mutate)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def field_bounds(cls: type, name: str) -> tuple[float | None, float | None]:
    """(lowest, highest) value the schema allows for field ``name`` of ``cls`` (its ``Ge``/``Le`` constraints; None
    where it sets none). For showing limits (sliders, messages); checking stays :func:`coerce`'s."""
    low = high = None
    for constraint in _constraints(getattr(field_types(cls)[name], "__metadata__", ())):
        if isinstance(constraint, Ge):
            low = constraint.ge
        elif isinstance(constraint, Le):
            high = constraint.le
    return low, high


def from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    """A ``cls`` built strictly from ``data``: removed keys dropped with a warning, unknown or missing keys refused,
    every value through :func:`coerce`."""
    types_ = field_types(cls)
    removed = [key for key in data if join_path(where, str(key)) in REMOVED_KEYS]
    for key in removed:
        path = join_path(where, key)
        logger.warning("ignoring %s (an older config's key): %s", path, REMOVED_KEYS[path])
    unknown = sorted((str(key) for key in data if key not in types_ and key not in removed))
    if unknown:
        raise unknown_key(where, unknown[0], types_)
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"missing key {join_path(where, missing[0])}; required: {', '.join(required)}")
    kwargs = {name: coerce(value, types_[name], join_path(where, name))
              for name, value in data.items() if name not in removed}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        # Checks across fields (``__post_init__``) name the field relative to the class.
        raise ConfigError(join_path(where, str(err))) from None
