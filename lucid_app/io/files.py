"""Atomic writes and output checks: every writer writes a temporary file beside its target and renames it, so a
crash or Ctrl-C never leaves a half-written result and never destroys the previous one; output folders and files are
checked before any work starts; ``metrics.jsonl`` is appended line by line."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# errno values of a write that found no room: the disk (ENOSPC) or the user's quota (EDQUOT) is full.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(target: Path) -> OSError:
    """The error of a write to ``target`` that found the disk full: an ``OSError(ENOSPC)`` whose text says so, and
    that the previous file is kept (every writer here writes beside its target first)."""
    return OSError(errno.ENOSPC, "the disk is full (no space left on device), so this file was not written (its "
                                 "previous version, if any, is kept)", str(target))


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) and move it onto ``path`` with permissions ``mode`` if
    the block succeeds (the temporary file is private to the user until then).

    Raises:
        OSError: :func:`disk_full`'s when the block or the move fails for lack of space (``path`` unchanged).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(mode)
        os.replace(tmp_path, target)
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:
            raise disk_full(target) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_temp_glob(name: str) -> str:
    """The glob of the temporary files :func:`atomic_path` makes for ``name`` (left behind only by a kill)."""
    path = Path(name)
    return str(path.with_name(f".{path.stem}.*{path.suffix}"))


class OutputError(ValueError):
    """An output path that cannot be written, or that would overwrite a run; the message says what to do."""


def _check_creatable_dir(folder: Path, what: str) -> None:
    """The nearest existing folder on the way to ``folder`` is a writable folder (so ``mkdir -p`` works)."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what} {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder}: the folder {existing} is not writable")


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """Check, before any work, that ``path`` is a folder that exists or can be made, and can be written in.

    Args:
        path: the output folder.
        what: how the message names it (the flag).

    Raises:
        OutputError: ``path`` (or a folder on the way to it) is a file, or the folder is not writable.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    _check_creatable_dir(path, what)
    return path


def writable_dir(path: str | Path, what: str = "--out") -> Path:
    """Make the folder ``path`` (and its parents) and prove that a file can be written in it, before any work.

    Unlike :func:`check_output_dir` this writes (a probe file, removed at once), so it also finds a read-only file
    system or a folder that refuses its owner, which permission bits alone do not show (e.g. to root).

    Raises:
        OutputError: the folder cannot be made or written in; the message says why.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OutputError(f"{what} {path}: cannot write there ({reason}); choose a folder you can write") from None
    return path


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """Check, before any work, that the file ``path`` can be written (replacing a file there is allowed).

    Raises:
        OutputError: ``path`` is a folder, a folder on the way to it is a file, or its folder is not writable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    _check_creatable_dir(path.parent, what)
    return path


def remove_files(paths: list[Path]) -> None:
    """Delete these files (folders are kept, even when left empty)."""
    for path in paths:
        logger.debug("removing %s", path)
        path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """Write a text file atomically (e.g. ``config.yaml``); ``mode`` 0o600 keeps a secret readable by its owner
    only, from its first byte."""
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def copy_file(source: str | Path, target: str | Path) -> Path:
    """Copy the file ``source`` to ``target`` atomically (contents only, not its permissions or times)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


def write_zip(path: str | Path, members: dict[str, bytes]) -> Path:
    """Write a ``.zip`` of ``members`` ({name inside the archive: contents}, in that order, deflated) atomically.

    Raises:
        ValueError: a member name that is not a bare file name (a folder part, ``..`` or empty), which an unpacker
            could place outside the folder it unpacks into.
    """
    for name in members:
        if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
            raise ValueError(f"zip member names must be bare file names, got {name!r}")
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return Path(path)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``, flushed at once so a crash loses nothing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
