"""Who owns a job or a run folder, derived on the server (DESIGN §6b, docs/SECURITY.md).

A client never says who it is: the owner of a request is a keyed hash (HMAC-SHA256) of what Gradio knows about it —
the signed-in user's name with ``app.py --auth``, else the browser session's hash — under a secret that only the
server holds. Owner ids name the run folders (``OUTPUTS/<owner>/<run>/``); neither the secret nor a session hash is
ever shown to a client, so a client that sees another's owner id (``--shared-runs`` lists other owners' runs) cannot
act as that owner: sending it as a session hash gives another owner id.

The secret is read from ``OUTPUTS/.owner_key`` (created on first start, readable by the server's user only), so a
signed-in user owns the same folder across restarts. The app never serves files from the outputs folder by URL
(:mod:`lucid_app.ui.served_files`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path

from lucid_app.io.files import write_text

logger = logging.getLogger(__name__)

KEY_NAME = ".owner_key"
KEY_BYTES = 32
# Hex digits of an owner id (128 bits): also a valid run-folder name part (run_folders.RUN_NAME).
OWNER_ID_CHARS = 32


class OwnerKeys:
    """Derives owner ids under one server secret (module docstring)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the owner-id secret must have at least 16 bytes")
        self._secret = secret

    @classmethod
    def for_outputs(cls, outputs: str | Path) -> OwnerKeys:
        """The keys of the server whose outputs folder is ``outputs``: its secret file, created when missing.

        Raises:
            OSError: the secret cannot be read or written. ValueError: the file does not hold a hex secret.
        """
        path = Path(outputs) / KEY_NAME
        if not path.is_file():
            write_text(path, secrets.token_hex(KEY_BYTES) + "\n", mode=0o600)
            logger.info("created the owner-id secret %s", path)
        text = path.read_text(encoding="utf-8").strip()
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise ValueError(f"{path} does not hold a hex secret; delete it to make a new one") from None

    def owner(self, session: str = "", user: str = "") -> str:
        """The owner id of a signed-in ``user``, else of a browser ``session`` (hex, :data:`OWNER_ID_CHARS` long)."""
        subject = f"user:{user}" if user else f"session:{session}"
        digest = hmac.new(self._secret, subject.encode("utf-8"), hashlib.sha256).hexdigest()
        return digest[:OWNER_ID_CHARS]


__all__ = ["KEY_NAME", "OWNER_ID_CHARS", "OwnerKeys"]
