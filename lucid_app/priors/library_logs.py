"""diffusers' and transformers' log messages through the ``logging`` tree, as every other library's.

Both libraries give their root logger a ``StreamHandler`` of their own, bound to whatever ``sys.stderr`` was when they
were first imported, and stop propagation. Their messages then bypass the format and destination the CLI and the app
configure (the app's server log), and, where ``sys.stderr`` is replaced and closed (pytest's capture), each message
becomes a "--- Logging error ---" traceback. :func:`route_library_logs` removes those handlers and lets the messages
propagate; the libraries' own levels (warnings and above by default) still decide what is emitted.
"""

from __future__ import annotations

import functools


@functools.cache
def route_library_logs() -> None:
    """Send diffusers' and transformers' log records to the root logger's handlers (once per process)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_default_handler()
        library.enable_propagation()
