"""Checkpoints: ``torch.save`` atomically, and ``torch.load(weights_only=True)`` with our own messages."""

from __future__ import annotations

import errno
import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from lucid_app.io.files import atomic_path

logger = logging.getLogger(__name__)

# How torch.save's zip writer reports a write that fell short (its C++ ``fwrite`` found no room): a RuntimeError
# "[enforce fail at inline_container.cc:...] . unexpected pos 640 vs 534", or "PytorchStreamWriter failed writing
# file ..." / "file write failed" in other versions.
_SHORT_WRITE = ("unexpected pos", "failed writing file", "file write failed")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` a checkpoint atomically: a crash mid-write keeps the previous checkpoint.

    Raises:
        OSError: the disk is full (ENOSPC, a message that says so; the previous checkpoint is kept), or another
            write failure.
    """
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:
            if not any(phrase in str(err) for phrase in _SHORT_WRITE):
                raise
            logger.debug("torch.save(%s) failed", tmp, exc_info=err)
            # A short write of a local file: the disk is full (atomic_path words it and keeps the previous file).
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp)) from None
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors, numbers, strings and dicts only).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        OSError: the file cannot be opened (e.g. no permission).
        ValueError: the file is damaged, or not a lucid-app checkpoint (our message; torch's is in the debug log).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    # Opened here so that an unreadable file (permissions) is an OSError of its own, not a damaged checkpoint.
    with path.open("rb") as file:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - a damaged file fails anywhere in torch.load (see _unreadable)
            raise _unreadable(path, err) from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} is not a lucid-app checkpoint (it holds a {type(state).__name__})")
    return state


def _unreadable(path: Path, err: Exception) -> ValueError:
    """Our message for a checkpoint ``torch.load`` refused (its own text advises retrying with weights_only=False,
    i.e. running the file's code, or filing an issue: not our advice); the details go to the debug log."""
    logger.debug("torch.load(%s) failed", path, exc_info=err)
    if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
        return ValueError(
            f"checkpoint {path} holds Python objects other than tensors, numbers and strings, so it was not written "
            "by lucid-app; it is not loaded, since unpickling it could run code"
        )
    # KeyError, EOFError, RuntimeError (zip reader), OSError (seek past the end), UnpicklingError (bad opcodes), ...
    return ValueError(f"checkpoint {path} is damaged (truncated or not a checkpoint file)")
