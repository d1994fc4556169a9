"""Images and videos: PNG (imageio) and H.264 ``.mp4`` (the ffmpeg of ``imageio-ffmpeg``), written atomically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from lucid_app.io.files import atomic_path


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] (tensor or array) or uint8 -> contiguous uint8 array [H, W, 3]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray((np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def write_png(path: str | Path, image: torch.Tensor | np.ndarray) -> Path:
    """Write an [H, W, 3] image (float in [0, 1] or uint8) as PNG."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, to_uint8(image), extension=".png")
    return Path(path)


def write_video(path: str | Path, frames: Iterator[np.ndarray], fps: int, size: tuple[int, int]) -> int:
    """Stream uint8 frames [H, W, 3] of ``size`` = (width, height) to an H.264 ``.mp4``; returns the frame count.

    Uses the ffmpeg binary shipped by ``imageio-ffmpeg``. Odd sizes are allowed (no macro-block padding).
    """
    import imageio_ffmpeg

    count = 0
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=8, macro_block_size=1,
            output_params=["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"],
        )
        writer.send(None)
        try:
            for frame in frames:
                writer.send(to_uint8(frame))
                count += 1
        finally:
            writer.close()
    return count
