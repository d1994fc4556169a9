"""Rendering a camera path without gradients: uint8 frames one by one, and a turntable ``.mp4`` of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from lucid_app.io.media import to_uint8, write_video
from lucid_app.render.base import Renderer, Splats
from lucid_app.render.cameras import CameraBatch


def render_frames(
    renderer: Renderer,
    splats: Splats,
    cameras: CameraBatch,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Render ``cameras`` in batches without gradients, yielding uint8 frames [H, W, 3] one by one."""
    device = splats.means.device
    for start in range(0, len(cameras), batch_size):
        batch = cameras[start : start + batch_size].to(device, splats.means.dtype)
        bg = torch.tensor(background, dtype=splats.means.dtype, device=device).expand(len(batch), 3)
        with torch.no_grad():
            rgb = renderer.render(splats, batch, bg).rgb
        for frame in rgb:
            yield to_uint8(frame)
        if progress is not None:
            progress(len(batch))


def write_turntable(
    path: str | Path,
    renderer: Renderer,
    splats: Splats,
    cameras: CameraBatch,
    fps: int = 30,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    progress: Callable[[int], None] | None = None,
) -> int:
    """Render a camera path and write it as an ``.mp4``; returns the number of frames written."""
    frames = render_frames(renderer, splats, cameras, background, progress=progress)
    return write_video(path, frames, fps, (cameras.width, cameras.height))
