"""argparse value types shared by the command-line entry points (``cli.py``, ``batch``, the ``bench_*`` commands,
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
