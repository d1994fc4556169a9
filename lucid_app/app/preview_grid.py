"""Preview images for the app: the trainer's preview views tiled into one grid image (numpy only)."""

from __future__ import annotations

import math

import numpy as np

# Views are shown at least this high (the trainer's first, smaller preview is enlarged to it).
PREVIEW_MIN_SIZE_PX = 256


def tile_views(images: np.ndarray, min_size_px: int = 0) -> np.ndarray:
    """Tile views [V, H, W, 3] into one near-square grid image [rows·H·k, cols·W·k, 3] (white where empty).

    Each view is enlarged by the integer factor k (nearest neighbour) that makes it at least ``min_size_px``
    high, so tiny training renders stay visible in the page.
    """
    k = max(1, -(-min_size_px // images.shape[1]))
    images = images.repeat(k, axis=1).repeat(k, axis=2)
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h, cols * w, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid


__all__ = ["PREVIEW_MIN_SIZE_PX", "tile_views"]
