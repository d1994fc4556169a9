"""Device and dtype resolution shared by priors, renderers and the trainer.

Conventions: ``"auto"`` means CUDA when ``torch.cuda.is_available()``, otherwise CPU; the ``"auto"`` dtype is
float16 on CUDA (what Stable Diffusion is run in) and float32 on CPU (where half precision is slow and some
kernels are missing).
"""

from __future__ import annotations

from typing import Literal

import torch

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` into a ``torch.device``.

    Raises:
        ValueError: the name is not a device torch knows, or CUDA was asked for and is not available.
    """
    if isinstance(name, torch.device):
        device = name
    elif name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available here; use 'auto' or 'cpu'")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"`` -> float16 on CUDA, float32 elsewhere; otherwise the named dtype.

    Raises:
        ValueError: the name is not one of auto, float32, float16, bfloat16.
    """
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]
