"""argparse value types of the command-line entry points (``main.py``, ``batch``, the ``bench`` commands,
``app.py``)."""

from __future__ import annotations

import argparse


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
