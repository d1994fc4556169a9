"""Step 2 of :mod:`lucid_app.render.torch_ref`: which Gaussians each (view, tile) composites, and in which order.

A Gaussian can only reach alpha >= 1/255 where ``q <= 2 ln(255 o)`` (q the squared Mahalanobis distance, o the
opacity). Every (view, tile) whose pixel centres that ellipse reaches becomes one entry: candidates come from the
ellipse's bounding box, and the box's corner tiles the ellipse misses are dropped (minimum of the quadratic over the
tile, in closed form, :func:`_min_mahalanobis_sq`). This support is exact, so no pixel that could contribute is ever
left out and the image does not depend on the tile size. Entries are sorted by (view, tile) with a stable integer
sort of depth-ordered entries, so each tile holds a front-to-back list of the Gaussians it must composite.

Also here: the grouping of tiles into slabs for the rasteriser (:func:`plan_slabs`, step 3) and the reshapes between
images and tiles (:func:`to_tiles`, :func:`from_tiles`). No gradient flows through anything in this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from lucid_app.render.projection import Projection


@dataclass
class TileBins:
    """Front-to-back Gaussian lists of every (view, tile).

    Attributes:
        ids: [M] flat (view * N + gaussian) index of each entry, grouped by tile, front to back in a tile.
        start, count: [C * tiles_y * tiles_x] offset and length of each tile's list in ``ids``.
        visible: [C, N] bool, the Gaussian touches at least one tile of that view.
        tile_size, tiles_x, tiles_y: the tile grid.
    """

    ids: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor
    visible: torch.Tensor
    tile_size: int
    tiles_x: int
    tiles_y: int


def bin_tiles(proj: Projection, width: int, height: int, tile_size: int) -> TileBins:
    """The (view, tile, depth)-sorted list of overlaps (see the module docstring)."""
    num_cams, n = proj.depths.shape
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    with torch.no_grad():
        centre, ext = proj.means2d.detach(), proj.extents
        limits = torch.tensor([tiles_x, tiles_y], device=centre.device, dtype=centre.dtype)
        # Clamp before the integer cast: far off-screen means can be huge.
        lo = ((centre - ext) / tile_size).clamp(torch.full_like(limits, -1.0), limits).floor().long()
        hi = ((centre + ext) / tile_size).clamp(torch.full_like(limits, -1.0), limits).floor().long()
        limits_i = limits.long()
        visible = proj.in_front & (ext > 0).all(-1) & (hi >= 0).all(-1) & (lo < limits_i).all(-1)
        lo = torch.maximum(lo, torch.zeros_like(lo))
        hi = torch.minimum(hi, limits_i - 1)
        span = (hi - lo + 1).clamp_min(0)
        per_item = torch.where(visible, span[..., 0] * span[..., 1], torch.zeros_like(span[..., 0]))

        # Visible (view, Gaussian) items, front to back; then one entry per tile of each item's box.
        items = visible.flatten().nonzero().squeeze(1)
        items = items.index_select(0, torch.argsort(proj.depths.detach().flatten().index_select(0, items)))
        reps = per_item.flatten().index_select(0, items)
        # Per-item attributes (box corner and width in tiles, mean, conic, reach^2), expanded to the entries.
        attrs = torch.cat(
            [lo.to(centre.dtype), span[..., :1].to(centre.dtype), centre, proj.conics.detach(),
             proj.reach_sq.expand(num_cams, n)[..., None]], dim=-1,
        ).reshape(num_cams * n, 9).index_select(0, items)
        item_of = torch.repeat_interleave(torch.arange(items.numel(), device=items.device), reps)
        attrs = attrs.index_select(0, item_of)
        first = (torch.cumsum(reps, 0) - reps).index_select(0, item_of)
        local = (torch.arange(item_of.numel(), device=items.device) - first).to(centre.dtype)
        row = torch.floor(local / attrs[:, 2])
        txy = attrs[:, :2] + torch.stack([local - row * attrs[:, 2], row], dim=-1)  # tile (x, y), exact in floats
        # The box is loose at its corners: keep an entry only if the ellipse reaches a pixel centre of the tile.
        near = _min_mahalanobis_sq(txy * tile_size + 0.5 - attrs[:, 3:5], tile_size - 1.0, attrs[:, 5:8])
        keep = (near <= attrs[:, 8]).nonzero().squeeze(1)
        ids = items.index_select(0, item_of.index_select(0, keep))
        txy = txy.index_select(0, keep).long()
        tile = ((ids // n) * tiles_y + txy[:, 1]) * tiles_x + txy[:, 0]
        tile, order = torch.sort(tile, stable=True)  # stable: keeps depth order inside each tile
        ids = ids.index_select(0, order)
        count = torch.bincount(tile, minlength=num_cams * tiles_x * tiles_y)
        start = torch.cumsum(count, 0) - count
        visible = (torch.bincount(ids, minlength=num_cams * n) > 0).reshape(num_cams, n)
    return TileBins(ids, start, count, visible, tile_size, tiles_x, tiles_y)


def _min_mahalanobis_sq(lo: torch.Tensor, size: float, conics: torch.Tensor) -> torch.Tensor:
    """Smallest ``a x^2 + 2 b x y + c y^2`` over the squares ``[lo, lo + size]^2`` (relative to the mean).

    Args:
        lo: [M, 2] lower corners relative to the Gaussian's mean; size: edge length; conics: [M, 3] (a, b, c).

    Returns:
        [M], 0 where the mean lies inside. Otherwise the minimum of the convex quadratic is on an edge, where
        it is a 1D parabola minimised in closed form and clamped to the edge.
    """
    a, b, c = conics.unbind(-1)
    x0, y0 = lo.unbind(-1)
    x1, y1 = x0 + size, y0 + size
    best = torch.full_like(a, float("inf"))
    for x in (x0, x1):
        y = torch.minimum(torch.maximum(-b * x / c, y0), y1)
        best = torch.minimum(best, a * x * x + 2 * b * x * y + c * y * y)
    for y in (y0, y1):
        x = torch.minimum(torch.maximum(-b * y / a, x0), x1)
        best = torch.minimum(best, a * x * x + 2 * b * x * y + c * y * y)
    inside = (x0 <= 0) & (x1 >= 0) & (y0 <= 0) & (y1 >= 0)
    return torch.where(inside, torch.zeros_like(best), best)


def plan_slabs(count: torch.Tensor, pixels: int, max_elements: int) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Group non-empty tiles into slabs of at most ``max_elements`` pixel x entry pairs.

    Returns:
        A list of (tile indices, k-chunks [(k0, k1), ...]); tiles are taken shortest list first so tiles in one
        slab have similar list lengths. Only a tile whose own list exceeds the budget gets several k-chunks.
    """
    lengths = count.tolist()
    order = sorted((i for i, c in enumerate(lengths) if c > 0), key=lambda i: lengths[i])
    k_cap = max(1, max_elements // pixels)
    slabs: list[tuple[list[int], list[tuple[int, int]]]] = []
    batch: list[int] = []
    for t in order:
        if batch and (len(batch) + 1) * pixels * lengths[t] > max_elements:
            k = lengths[batch[-1]]
            slabs.append((batch, [(k0, min(k, k0 + k_cap)) for k0 in range(0, k, k_cap)]))
            batch = []
        batch.append(t)
    if batch:
        k = lengths[batch[-1]]
        slabs.append((batch, [(k0, min(k, k0 + k_cap)) for k0 in range(0, k, k_cap)]))
    return slabs


def to_tiles(img: torch.Tensor, bins: TileBins) -> torch.Tensor:
    """[C, H, W, D] -> [C * tiles_y * tiles_x, P, D] (zero padding at the right and bottom)."""
    c, h, w, d = img.shape
    t = bins.tile_size
    img = F.pad(img, (0, 0, 0, bins.tiles_x * t - w, 0, bins.tiles_y * t - h))
    img = img.reshape(c, bins.tiles_y, t, bins.tiles_x, t, d).permute(0, 1, 3, 2, 4, 5)
    return img.reshape(c * bins.tiles_y * bins.tiles_x, t * t, d)


def from_tiles(x: torch.Tensor, bins: TileBins, num_cams: int, width: int, height: int) -> torch.Tensor:
    """Inverse of :func:`to_tiles`: [C * tiles, P, D] -> [C, H, W, D]."""
    t, d = bins.tile_size, x.shape[-1]
    x = x.reshape(num_cams, bins.tiles_y, bins.tiles_x, t, t, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(num_cams, bins.tiles_y * t, bins.tiles_x * t, d)[:, :height, :width]
