"""Ctrl-C and SIGTERM for the long commands (``generate``, ``batch``): stop cleanly, export, exit 128 + signum.

The handler only sets flags or raises (a signal can land while the main thread holds a lock or writes to stderr).
Handlers are installed only in the main thread, and the previous ones restored on exit.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM; the command exits with status ``128 + signum`` (130, 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopOnSignal:
    """While ``generate`` runs: the first SIGINT or SIGTERM asks the trainer (``stop``) to end before its next step
    and export the last good state, checkpoint included, so a resume continues bit for bit; a second one, or one
    before training starts (``stop`` is None), raises :class:`Interrupted` at once.

    The handler only sets flags (a signal can land while the main thread holds a lock or writes to stderr). Handlers
    are installed only in the main thread, and the previous ones restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stop: Callable[[], None] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def signal_name(self) -> str | None:
        """``"SIGINT"`` / ``"SIGTERM"`` once one arrived, else None."""
        return signal.Signals(self.signum).name if self.signum is not None else None

    def _handle(self, signum: int, frame: object) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self.stop is not None:
            self.stop()
            return
        raise Interrupted(signum)
