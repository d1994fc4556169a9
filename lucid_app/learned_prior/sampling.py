"""The grid of a trained prior's ``samples.png``: rows = captions, columns = view words (the samples themselves:
:func:`lucid_app.guidance.sampling.sample_cfg`)."""

from __future__ import annotations

import numpy as np
import torch

LABEL_INK = (20, 20, 20)
LABEL_PAD_PX = 4
TILE_MIN_PX = 64


def sample_grid(images: torch.Tensor, rows: list[str], columns: list[str]) -> np.ndarray:
    """Images [rows·cols, h, w, 3] in [0, 1] (row-major) → one labelled uint8 grid [H, W, 3] on white.

    Tiles are enlarged (nearest neighbour) to at least :data:`TILE_MIN_PX`; row labels on the left, column labels
    on top (PIL's default font).
    """
    from PIL import Image, ImageDraw, ImageFont

    n_cols = len(columns)
    k = max(1, -(-TILE_MIN_PX // images.shape[1]))
    tiles = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().repeat(k, axis=1).repeat(k, axis=2)
    tile_h, tile_w = tiles.shape[1], tiles.shape[2]
    font = ImageFont.load_default(size=12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = max((int(measure.textlength(text, font=font)) for text in rows), default=0) + 2 * LABEL_PAD_PX
    header = 16
    canvas = Image.new("RGB", (margin + n_cols * tile_w, header + len(rows) * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(columns):
        draw.text((margin + c * tile_w + LABEL_PAD_PX, 1), text, fill=LABEL_INK, font=font)
    for r, text in enumerate(rows):
        draw.text((LABEL_PAD_PX, header + r * tile_h + tile_h // 2 - 6), text, fill=LABEL_INK, font=font)
        for c in range(n_cols):
            canvas.paste(Image.fromarray(tiles[r * n_cols + c]), (margin + c * tile_w, header + r * tile_h))
    return np.asarray(canvas)
