"""diffusers' and transformers' log messages through the ``logging`` tree, as every other library's.

Both libraries give their root logger a ``StreamHandler`` of their own, bound to whatever ``sys.stderr`` was when they
were first imported, and stop propagation. Their messages then bypass the format and destination the CLI and the app
configure (the app's server log), and, where ``sys.stderr`` is replaced and closed (pytest's capture), each message
becomes a "--- Logging error ---" traceback. :func:`route_library_logs` removes those handlers and lets the messages
propagate; the libraries' own levels (warnings and above by default) still decide what is emitted.
"""

from __future__ import annotations

import functools
import importlib

# The library → its logging module (each has disable_default_handler and enable_propagation).
LOGGING_MODULES = {"diffusers": "diffusers.utils.logging", "transformers": "transformers.utils.logging"}


def route_library_logs(*libraries: str) -> None:
    """Send the log records of ``libraries`` (names of :data:`LOGGING_MODULES`) to the root logger's handlers, each
    once per process. Only the libraries named are imported (the multi-view prior needs no transformers)."""
    for library in libraries:
        _route(library)


@functools.cache
def _route(library: str) -> None:
    logging_module = importlib.import_module(LOGGING_MODULES[library])
    logging_module.disable_default_handler()
    logging_module.enable_propagation()
