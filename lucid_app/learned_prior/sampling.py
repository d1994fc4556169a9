"""DDIM samples with classifier-free guidance from any prior (``samples.png`` of a trained prior).

Deterministic DDIM (η = 0, DDIM eq. 12) over ``steps`` evenly spaced timesteps T − T/steps, ..., 0, the last step
going to x̂₀ itself; each step one batched prior call on [negative; positive] and CFG
ε̂ = ε(x, ∅) + s·(ε(x, y) − ε(x, ∅)) (:func:`lucid_app.guidance.cfg.cfg_combine`). The start noise comes from the
caller's generator, so a fixed generator gives the same grid for the same weights.
"""

from __future__ import annotations

import numpy as np
import torch

from lucid_app.guidance.cfg import cfg_combine
from lucid_app.guidance.ddim import ddim_jump, predict_x0
from lucid_app.priors.base import DiffusionPrior

LABEL_INK = (20, 20, 20)
LABEL_PAD_PX = 4
TILE_MIN_PX = 64


def ddim_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """[steps] timestep indices from high to low: T − T/steps, ..., T/steps, 0 (evenly spaced, "leading")."""
    stride = num_train_timesteps // steps
    return [i * stride for i in reversed(range(steps))]


@torch.no_grad()
def sample_cfg(
    prior: DiffusionPrior,
    prompts: list[str],
    shape: tuple[int, ...],
    generator: torch.Generator,
    steps: int = 50,
    scale: float = 5.0,
) -> torch.Tensor:
    """DDIM samples x₀ [P, ...] for ``prompts`` with CFG against the empty prompt.

    Args:
        prior: any diffusion prior.
        prompts: P prompt texts.
        shape: the shape of one x₀ (e.g. (3, R, R)).
        generator: source of the start noise x_T ~ N(0, I) (on the CPU).
        steps: DDIM steps.
        scale: CFG scale s.

    Returns:
        [P, *shape] x₀ on ``prior.device``.
    """
    cond = prior.encode_prompts(prompts)
    uncond = prior.encode_prompts([""]).expand_as(cond)
    both = torch.cat([uncond, cond])
    x = torch.randn((len(prompts), *shape), generator=generator).to(prior.device)
    alphas = prior.alphas_cumprod
    timesteps = ddim_timesteps(prior.num_train_timesteps, steps)
    for i, t in enumerate(timesteps):
        t_batch = torch.full((2 * len(prompts),), t, dtype=torch.long, device=prior.device)
        eps_neg, eps_pos = prior.predict_noise(torch.cat([x, x]), t_batch, both).chunk(2)
        eps = cfg_combine(eps_neg, eps_pos, scale)
        if i + 1 < len(timesteps):
            x = ddim_jump(x, eps, alphas[t], alphas[timesteps[i + 1]])
        else:
            x = predict_x0(x, eps, alphas[t])
    return x


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
