"""How a run's files reach a client: only through a handler that checked the owner, as a copy under a random name.

The app gives Gradio no ``allowed_paths``, so nothing under the outputs folder has a URL (Gradio answers 403). A
handler that has checked that a run is its caller's (or that runs are shared for viewing) hands Gradio a copy made
here: ``<Gradio's upload folder>/lucid-served/<128 random bits>/<name>``, which Gradio serves as it is. Such a URL
says nothing about the run or its owner, cannot be derived from the file's content (as Gradio's own cache names
can), differs between owners for the same file, and stops working after ``ttl_s``, when the copy is removed. Text
produced for the client (a ``config.yaml`` without server paths) is served the same way.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lucid_app.io.files import copy_file, remove_files, write_text

logger = logging.getLogger(__name__)

SERVED_DIR_NAME = "lucid-served"
DEFAULT_TTL_S = 6 * 3600.0
# Expired copies are looked for at most this often (a scan of the served folder).
PRUNE_EVERY_S = 60.0
TOKEN_BYTES = 16


@dataclass(frozen=True)
class _Copy:
    path: Path
    created: float


class ServedFiles:
    """Per-owner copies of files for Gradio to serve (module docstring).

    Args:
        root: where the copies go; it must lie in Gradio's upload folder (``gradio.utils.get_upload_folder()``),
            the one folder Gradio serves besides ``allowed_paths``.
        ttl_s: how long a copy (and so its URL) lives.
        clock: seconds now (tests pass their own).
    """

    def __init__(self, root: str | Path, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.ttl_s = ttl_s
        self._clock = clock
        self._copies: dict[tuple[str, ...], _Copy] = {}
        self._lock = threading.Lock()
        self._pruned = float("-inf")

    def file(self, owner: str, path: str | Path) -> str | None:
        """A served copy of the file ``path`` for ``owner`` (None when it is not a file). The same owner gets the same
        copy while the file is unchanged and the copy young."""
        source = Path(path)
        try:
            stat = source.stat()
        except OSError:
            return None
        if not source.is_file():
            return None
        key = ("file", owner, str(source.resolve()), str(stat.st_mtime_ns), str(stat.st_size))
        return self._publish(key, source.name, lambda target: copy_file(source, target))

    def text(self, owner: str, name: str, text: str) -> str:
        """A served file ``name`` holding ``text``, for ``owner``."""
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self._publish(("text", owner, name, digest), name, lambda target: write_text(target, text))

    def _publish(self, key: tuple[str, ...], name: str, write: Callable[[Path], object]) -> str:
        now = self._clock()
        self._prune(now)
        with self._lock:
            known = self._copies.get(key)
            if known is not None and now - known.created < self.ttl_s / 2 and known.path.is_file():
                return str(known.path)
        target = self.root / secrets.token_urlsafe(TOKEN_BYTES) / name
        write(target)
        with self._lock:
            self._copies[key] = _Copy(target, now)
        return str(target)

    def _prune(self, now: float) -> None:
        """Remove copies older than ``ttl_s`` (those of earlier runs of the app too), at most every minute."""
        with self._lock:
            if now - self._pruned < PRUNE_EVERY_S:
                return
            self._pruned = now
            self._copies = {k: c for k, c in self._copies.items() if now - c.created < self.ttl_s}
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            try:
                expired = folder.is_dir() and now - folder.stat().st_mtime >= self.ttl_s
                if expired:
                    remove_files([f for f in folder.iterdir() if f.is_file()])
                    folder.rmdir()
            except OSError as err:
                logger.debug("could not remove the served copy %s: %s", folder.name, err)


def gradio_served_root() -> Path:
    """The folder for served copies inside Gradio's upload folder (``GRADIO_TEMP_DIR``)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()) / SERVED_DIR_NAME


__all__ = ["DEFAULT_TTL_S", "ServedFiles", "gradio_served_root"]
