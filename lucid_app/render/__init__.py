"""Differentiable Gaussian-splatting renderers."""

from __future__ import annotations

import importlib.util
from typing import Callable, Literal

import torch

from lucid_app.config.devices import resolve_device
from lucid_app.render.base import Renderer, RenderOutput, Splats
from lucid_app.render.gsplat_backend import GsplatRenderer
from lucid_app.render.inria_backend import InriaRenderer
from lucid_app.render.torch_ref import TorchRenderer

RendererName = Literal["auto", "torch", "gsplat", "inria"]

RENDERERS: dict[str, Callable[[torch.device], Renderer]] = {
    "torch": lambda device: TorchRenderer(),
    "gsplat": GsplatRenderer,
    "inria": InriaRenderer,
}


def make_renderer(name: RendererName = "auto", device: str | torch.device = "auto") -> Renderer:
    """Build a renderer by name.

    ``"auto"`` is gsplat on a CUDA device when gsplat is installed, otherwise the pure-PyTorch renderer.

    Raises:
        ValueError: unknown name, or a CUDA-only backend asked for on another device.
        ImportError: an optional backend's package is missing (the message says how to install it).
    """
    dev = resolve_device(device)
    if name == "auto":
        name = "gsplat" if dev.type == "cuda" and importlib.util.find_spec("gsplat") is not None else "torch"
    if name not in RENDERERS:
        raise ValueError(f"unknown renderer {name!r}; valid: auto, {', '.join(RENDERERS)}")
    return RENDERERS[name](dev)


__all__ = ["RENDERERS", "Renderer", "RenderOutput", "Splats", "TorchRenderer", "make_renderer"]
