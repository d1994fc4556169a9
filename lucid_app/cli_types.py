"""argparse value types shared by the command-line entry points (``cli.py``, the ``bench_*`` commands)."""

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
