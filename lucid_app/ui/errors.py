"""What a client of the app sees when something goes wrong: one clear line, no server paths, no tracebacks.

Every handler that Gradio calls is wrapped in :func:`user_errors`: user errors (``ValueError`` and its kin —
``ConfigError``, ``JobError``, ``PriorError``, ``AvatarError`` — plus ``OverflowError``/``TypeError`` from values
sent over raw HTTP) become a ``gr.Error`` with the first line of their message; anything else is logged with its
traceback and shown as a short "internal error" line with an id to find it in the log. The server log keeps one line
per user error (:func:`log_line`) and a traceback only for internal errors. Messages pass through :func:`public_text`,
which replaces absolute server paths (upload folders, the outputs root) by their last part.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 400
# An absolute POSIX path that does not continue a word, a URL ("https://host/...") or a relative path.
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s'\"`/]+/)*([^\s'\"`/]*)")
# Exceptions that carry a message written for the user (or a value the user sent that could not be read).
USER_EXCEPTIONS: tuple[type[BaseException], ...] = (ValueError, OverflowError, TypeError, FileNotFoundError)

F = TypeVar("F", bound=Callable[..., Any])


def public_text(text: str) -> str:
    """The first non-empty line of ``text`` ("" if none), each absolute path cut to its last part, ≤ 400 characters."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    first = _ABS_PATH.sub(lambda m: m.group(1) or "a server folder", first)
    if len(first) > MAX_MESSAGE_CHARS:
        first = first[: MAX_MESSAGE_CHARS - 1] + "…"
    return first


def log_line(text: str) -> str:
    """``text`` as one line of the server log: its lines joined with " | " (the log keeps server paths)."""
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _as_gradio_error(err: BaseException, where: str) -> gr.Error:
    """The client's ``gr.Error`` for ``err``, after the server log's record of it: one INFO line for a user error
    (its traceback only at DEBUG, with ``-v``), an ERROR with the traceback for an internal one. Gradio would print
    the traceback of every error it is handed again (``print_exception``): it is told not to."""
    if isinstance(err, gr.Error):
        logger.info("%s: %s", where, log_line(err.message))
        return gr.Error(public_text(err.message), duration=err.duration, visible=err.visible, title=err.title,
                        print_exception=False)
    if isinstance(err, USER_EXCEPTIONS):
        logger.info("%s: %s", where, log_line(str(err) or type(err).__name__))
        logger.debug("%s failed", where, exc_info=err)
        return gr.Error(public_text(str(err) or type(err).__name__), print_exception=False)
    ref = uuid.uuid4().hex[:8]
    logger.error("%s: internal error %s", where, ref, exc_info=err)
    return gr.Error(f"Internal error on the server (logged as {ref}); please try again or report it.",
                    print_exception=False)


def user_errors(func: F) -> F:
    """Wrap a Gradio handler (plain or generator) so that every error reaches the client as one clear line."""
    where = getattr(func, "__qualname__", "handler")
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from func(*args, **kwargs)
            except Exception as err:  # every error becomes one public line; details go to the log
                raise _as_gradio_error(err, where) from None

        return generator  # type: ignore[return-value]

    @functools.wraps(func)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as err:  # every error becomes one public line; details go to the log
            raise _as_gradio_error(err, where) from None

    return plain  # type: ignore[return-value]
