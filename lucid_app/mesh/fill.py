"""Fill a texture's unused texels from the used ones, so that bilinear filtering and mip-maps show no seams.

A texel on a UV island's border is blended by bilinear filtering with the texels outside the island, and a
mip-map level averages whole blocks across the padding; left black (or white), those texels bleed a dark (light)
line along every seam. Two steps fill them:

1. Dilation: ``rings`` times, each unused texel next to a used one (8-neighbourhood) takes the mean of its used
   neighbours and becomes used: the padding the packer left holds the colours just inside the island.
2. Push-pull (Gortler et al. 1996, "The Lumigraph", §3.4): the used texels are averaged down a pyramid of 2 x 2
   blocks (push), then every level's unused texels take the value of the coarser level above them (pull), so the
   rest of the texture holds a smooth continuation of the nearest islands' colours, and every mip level of it
   averages only colours of the surface.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DILATION_RINGS = 4


def fill_unused(image: np.ndarray, used: np.ndarray, rings: int = DEFAULT_DILATION_RINGS) -> np.ndarray:
    """``image`` with its unused texels filled (the module docstring's two steps); used texels are kept exactly.

    Args:
        image: [H, W, C] float colours (values at unused texels are ignored).
        used: [H, W] bool, the texels that hold surface colours.
        rings: dilation steps before the push-pull.

    Returns:
        [H, W, C] float64 with every texel set (all zeros where nothing is used).
    """
    out = np.where(used[..., None], np.asarray(image, np.float64), 0.0)
    mask = used.copy()
    if not mask.any():
        return out
    for _ in range(int(rings)):
        if mask.all():
            return out
        total, count = _neighbour_sums(out * mask[..., None], mask.astype(np.float64))
        grow = ~mask & (count > 0)
        out[grow] = total[grow] / count[grow, None]
        mask |= grow
    return _push_pull(out, mask)


def _neighbour_sums(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``values`` [H, W, C] and ``weights`` [H, W] over each texel's 8 neighbours (zero beyond the edge)."""
    padded_v = np.pad(values, ((1, 1), (1, 1), (0, 0)))
    padded_w = np.pad(weights, 1)
    height, width = weights.shape
    total = np.zeros_like(values)
    count = np.zeros_like(weights)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            total += padded_v[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
            count += padded_w[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
    return total, count


def _push_pull(image: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Step 2: unused texels of ``image`` [H, W, C] from a pyramid of the ``used`` [H, W] ones."""
    if used.all() or min(used.shape) <= 1:
        return np.where(used[..., None], image, (image * used[..., None]).sum((0, 1)) / max(used.sum(), 1))
    height, width = used.shape
    weight = used.astype(np.float64)
    padded_h, padded_w = height + height % 2, width + width % 2
    sums = np.zeros((padded_h, padded_w, image.shape[2]))
    sums[:height, :width] = image * weight[..., None]
    weights = np.zeros((padded_h, padded_w))
    weights[:height, :width] = weight
    coarse_sum = sums.reshape(padded_h // 2, 2, padded_w // 2, 2, -1).sum(axis=(1, 3))
    coarse_weight = weights.reshape(padded_h // 2, 2, padded_w // 2, 2).sum(axis=(1, 3))
    coarse_used = coarse_weight > 0
    coarse = np.where(coarse_used[..., None], coarse_sum / np.maximum(coarse_weight, 1e-30)[..., None], 0.0)
    filled = _push_pull(coarse, coarse_used)
    up = np.repeat(np.repeat(filled, 2, axis=0), 2, axis=1)[:height, :width]
    return np.where(used[..., None], image, up)
