"""argparse value types of the command-line entry points (``main.py``, ``batch``, the ``bench`` commands,
``app.py``).

Sizes, counts and camera values take their limits from the config schema: :func:`bounded` reads a schema bound type
(``Steps``, ``RenderSize``, ``FovyRad``, ...) or a config field's annotation (:func:`field_bounds`) and checks the
value with the loader's own coercer, so a flag meets the same limits (finite, within named bounds) as the config key it
stands for, and a bad value is one line naming the flag: ``argument --size: must be <= 2048, got 100000``.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable
from typing import Any

from lucid_app.config import ConfigError, check_value


def positive_int(text: str) -> int:
    """An integer > 0, or an ``ArgumentTypeError`` naming the bad value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0, or an ``ArgumentTypeError`` naming the bad value."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0, or an ``ArgumentTypeError`` naming the bad value."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0, or an ``ArgumentTypeError`` naming the bad value."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers (``200,500``), or an ``ArgumentTypeError`` naming the bad value."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return values


def rgb_color(text: str) -> tuple[float, float, float]:
    """A colour named white, black or grey, or ``r,g,b`` in [0, 1]; an ``ArgumentTypeError`` otherwise."""
    named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5), "gray": (0.5, 0.5, 0.5)}
    if text.lower() in named:
        return named[text.lower()]
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"background must be white, black, grey or 'r,g,b' in [0, 1], got {text!r}")
    return values  # type: ignore[return-value]


def field_bounds(cls: type, name: str) -> Any:
    """The annotation of the config field ``cls.name`` (its type with its bounds), for :func:`bounded`."""
    return typing.get_type_hints(cls, include_extras=True)[name]


def _read(text: str, annotation: Any) -> Any:
    """``text`` as the int or float that ``annotation`` (an ``Annotated[int | float, ...]``) holds, checked by the
    config's coercer; an ``ArgumentTypeError`` of one line otherwise."""
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    try:
        value = base(text.strip())
    except ValueError:
        noun = "an integer" if base is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
    try:
        return check_value(value, annotation, "")
    except ConfigError as err:
        # The coercer's messages start with the field's path; here the flag names the value (argparse adds it).
        raise argparse.ArgumentTypeError(str(err).removeprefix(": ")) from None


def bounded(annotation: Any) -> Callable[[str], Any]:
    """An argparse type: a number within the bounds of ``annotation`` (a schema bound type such as
    ``lucid_app.config.RenderSize``, ``Annotated[int, Ge(1), Le(16)]``, or :func:`field_bounds`); floats must be
    finite."""

    def parse(text: str) -> Any:
        return _read(text, annotation)

    return parse


def bounded_list(annotation: Any, max_items: int) -> Callable[[str], tuple[Any, ...]]:
    """An argparse type: 1 to ``max_items`` comma-separated numbers (``200,500``), each within ``annotation``'s
    bounds as for :func:`bounded`."""

    def parse(text: str) -> tuple[Any, ...]:
        parts = [part for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}")
        if len(parts) > max_items:
            raise argparse.ArgumentTypeError(f"at most {max_items} values, got {len(parts)}")
        values = []
        for i, part in enumerate(parts):
            try:
                values.append(_read(part, annotation))
            except argparse.ArgumentTypeError as err:
                raise argparse.ArgumentTypeError(f"value {i + 1} ({part.strip()!r}): {err}") from None
        return tuple(values)

    return parse
