"""Pure-PyTorch differentiable EWA splatting: the reference renderer (CPU and CUDA, float32 and float64).

Algorithm
---------
1. **Projection** (plain autograd, O(C N)). Means go to the camera frame with the viewmat; the 3D covariance
   ``R S S^T R^T`` (R from the normalised quaternion, S = diag(scales)) is pushed through the local affine
   approximation of the pinhole projection (EWA): ``Sigma_2d = J W Sigma W^T J^T + 0.3 I`` where W is the
   viewmat's rotation and J the perspective Jacobian at the mean (its x/z, y/z clamped to 1.3x the field of
   view, as 3DGS does, so Gaussians far off-screen keep bounded footprints). The 0.3 px^2 term is the
   low-pass filter of 3DGS. Gaussians with z < 0.01 are culled; ``radius = ceil(3 sqrt(lambda_max))``.
2. **Binning** (no gradient, :mod:`lucid_app.render.tiles`). Every (view, tile) whose pixel centres a Gaussian's
   alpha >= 1/255 ellipse reaches becomes one entry (an exact support: the image does not depend on the tile
   size); entries are sorted so each tile holds a front-to-back list of the Gaussians it must composite.
3. **Rasterisation** (one custom ``autograd.Function``). Tiles are grouped into *slabs* of ``B`` tiles x
   ``P`` pixels x ``k`` list entries with ``B P k <= max_slab_elements`` (tiles sorted by list length so the
   padding is small; a tile whose list alone is too long is cut into k-chunks that carry the transmittance).
   In a slab the exponent is a quadratic polynomial of the pixel's tile-local coordinates, so
   ``log(o) - q/2 = [x^2, xy, y^2, x, y, 1] @ coef`` is one batched matmul; then ``alpha = min(0.99, o G)``,
   zero below 1/255, ``T = cumprod(1 - alpha)`` (exclusive), ``w = alpha T``, and
   ``[rgb, z, alpha] += w @ [c, z, 1]`` (another matmul). Like 3DGS, compositing stops before the Gaussian
   that would bring T to 1e-4 or below. Memory is O(slab) + O(C N + entries + C H W): measured peak RSS for
   100k Gaussians x 4 views at 128^2 is under 0.9 GB, interpreter and torch included.
4. **Backward** recomputes each slab (nothing per pixel x Gaussian is kept from the forward) and uses the
   closed form of front-to-back compositing. With ``f_k = c_k . dL/drgb + z_k dL/ddepth + dL/dalpha`` and
   ``S_k = sum_{j>k} w_j f_j + T_final bg . dL/drgb`` (the saved per-pixel total minus a cumsum),
   ``dL/dalpha_k = T_k f_k - S_k / (1 - alpha_k)``, hence ``dL/dlog(oG)_k = w_k f_k - S_k alpha_k/(1-alpha_k)``
   where alpha is not clamped. The gradients of the six polynomial coefficients are one matmul with the pixel
   monomials; a chain rule on [B, k] tensors gives d(mean2d, conic, log o); colours and depths get
   ``w^T @ dL/d[rgb, z]``. All is scattered back to (view, Gaussian) rows with ``index_add_``; autograd does
   the rest (SH, projection, covariance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lucid_app.render.base import RenderOutput, Splats
from lucid_app.render.cameras import CameraBatch
from lucid_app.render.projection import project_gaussians
from lucid_app.render.sh import sh_to_rgb
from lucid_app.render.tiles import TileBins, bin_tiles, from_tiles, plan_slabs, to_tiles

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
# Columns of the per-Gaussian table handed to the rasteriser (one row per view x Gaussian).
# Columns 6..10 are the features w multiplies: colour, depth and a constant 1 (whose sum is the alpha).
_MX, _MY, _A, _B, _C, _LOGO = 0, 1, 2, 3, 4, 5
_FEATURES = slice(6, 11)
_TABLE_WIDTH = 11
_PAD_LOG_OPACITY = -1.0e4  # exp() of it is exactly 0: padding entries never contribute.


class _TileContext:
    """Tile geometry shared by the forward and backward passes (pixel monomials, tile centres, gathers)."""

    def __init__(self, table: torch.Tensor, bins: TileBins, num_cams: int) -> None:
        t = bins.tile_size
        self.bins = bins
        self.pixels = t * t
        coords = torch.arange(t, device=table.device, dtype=table.dtype) + 0.5 - 0.5 * t
        py, px = torch.meshgrid(coords, coords, indexing="ij")
        px, py = px.flatten(), py.flatten()
        self.monomials = torch.stack([px * px, px * py, py * py, px, py, torch.ones_like(px)], dim=-1)  # [P, 6]
        tile_idx = torch.arange(num_cams * bins.tiles_y * bins.tiles_x, device=table.device)
        self.centres = torch.stack(
            [(tile_idx % bins.tiles_x) * t + 0.5 * t, (tile_idx // bins.tiles_x % bins.tiles_y) * t + 0.5 * t], -1
        ).to(table.dtype)
        pad = torch.zeros(1, _TABLE_WIDTH, device=table.device, dtype=table.dtype)
        pad[0, _LOGO] = _PAD_LOG_OPACITY
        self.table = torch.cat([table, pad])
        self.pad_id = table.shape[0]

    def gather(self, tiles: torch.Tensor, k0: int, k1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries k0..k1 of the given tiles' lists: (flat ids [B, k], rows [B, k, 11] in tile-local pixels)."""
        ks = torch.arange(k0, k1, device=tiles.device)
        pos = self.bins.start[tiles, None] + ks
        inside = ks < self.bins.count[tiles, None]
        pos = pos.clamp_max(max(self.bins.ids.numel() - 1, 0))
        ids = torch.where(inside, self.bins.ids.index_select(0, pos.flatten()).view_as(pos), self.pad_id)
        rows = self.table.index_select(0, ids.flatten()).view(*ids.shape, _TABLE_WIDTH)
        rows[..., :2] -= self.centres.index_select(0, tiles)[:, None]
        return ids, rows


def _log_alpha_coefficients(rows: torch.Tensor) -> torch.Tensor:
    """[B, k, 11] rows -> [B, 6, k] coefficients of log(o) - q/2 on the monomials [x^2, xy, y^2, x, y, 1]."""
    mx, my, a, b, c, logo = (rows[..., i] for i in (_MX, _MY, _A, _B, _C, _LOGO))
    lin_x, lin_y = a * mx + b * my, b * mx + c * my
    const = logo - 0.5 * (mx * lin_x + my * lin_y)
    return torch.stack([-0.5 * a, -b, -0.5 * c, lin_x, lin_y, const], dim=1)


def _composite_slab(
    monomials: torch.Tensor, rows: torch.Tensor, t_in: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Front-to-back compositing of one slab chunk (both passes call this; the backward recomputes it).

    Args:
        monomials: [P, 6] tile-local pixel monomials.
        rows: [B, k, 11] table rows of the chunk's list entries, means in tile-local pixels.
        t_in: [B, P] transmittance before the chunk (without the early stop; equal to it while not stopped).

    Returns:
        o G, alpha (clamped, 0 below 1/255), w = alpha T (0 after the early stop), all [B, P, k]; the
        transmittance after the chunk [B, P]; and the early-stop mask [B, P, k] (None when nothing stops).
    """
    og = torch.matmul(monomials, _log_alpha_coefficients(rows)).exp_()
    alpha = F.threshold(og, ALPHA_MIN, 0.0).clamp_max_(ALPHA_MAX)
    t_incl = torch.rsub(alpha, 1.0).cumprod_(dim=-1).mul_(t_in[..., None])
    w = torch.cat([t_in[..., None], t_incl[..., :-1]], dim=-1).mul_(alpha)  # alpha x exclusive T
    stop = None
    if bool((t_incl[..., -1] <= T_MIN).any()):
        # Like 3DGS: the Gaussian that would bring T to T_MIN or below, and all behind it, are not drawn.
        stop = t_incl <= T_MIN
        w.masked_fill_(stop, 0.0)
    return og, alpha, w, t_incl[..., -1].clone(), stop


class _RasterizeTiles(torch.autograd.Function):
    """Steps 3 and 4 of the module docstring. table: [C * N, 11], backgrounds: [C, 3]."""

    @staticmethod
    def forward(ctx, table, backgrounds, bins, width, height, max_elements):  # noqa: ANN001, ANN205
        num_cams = backgrounds.shape[0]
        tiles = _TileContext(table, bins, num_cams)
        num_tiles = bins.count.numel()
        acc = table.new_zeros(num_tiles, tiles.pixels, 5)  # sum_k w_k (r, g, b, z, 1)
        plan = plan_slabs(bins.count, tiles.pixels, max_elements)
        for tile_list, chunks in plan:
            idx = torch.tensor(tile_list, device=table.device)
            t_run = table.new_ones(len(tile_list), tiles.pixels)
            acc_b = table.new_zeros(len(tile_list), tiles.pixels, 5)
            for k0, k1 in chunks:
                _, rows = tiles.gather(idx, k0, k1)
                _, _, w, t_run, _ = _composite_slab(tiles.monomials, rows, t_run)
                acc_b += torch.matmul(w, rows[..., _FEATURES])
            acc.index_copy_(0, idx, acc_b)
        t_final = 1.0 - acc[..., 4:]
        bg_tiles = backgrounds.repeat_interleave(num_tiles // num_cams, dim=0)[:, None]
        ctx.save_for_backward(table, backgrounds, acc)
        ctx.meta = (bins, plan)
        out = torch.cat([acc[..., :3] + t_final * bg_tiles, acc[..., 4:], acc[..., 3:4]], dim=-1)
        out = from_tiles(out, bins, num_cams, width, height)
        return out[..., :3].contiguous(), out[..., 3:4].contiguous(), out[..., 4:5].contiguous()

    @staticmethod
    def backward(ctx, grad_rgb, grad_alpha, grad_depth):  # noqa: ANN001, ANN205
        table, backgrounds, acc = ctx.saved_tensors
        bins, plan = ctx.meta
        num_cams = backgrounds.shape[0]
        tiles = _TileContext(table, bins, num_cams)
        # Per-pixel gradient of the features (r, g, b, z, 1) that w multiplies: [tiles, P, 5].
        g5 = to_tiles(torch.cat([grad_rgb, grad_depth, grad_alpha], dim=-1), bins)
        bg_tiles = backgrounds.repeat_interleave(bins.count.numel() // num_cams, dim=0)
        t_final = 1.0 - acc[..., 4]
        # sum_k w_k f_k + T_final (bg . dL/drgb): the loss terms that lie behind the front of each pixel.
        total = (acc * g5).sum(-1) + t_final * (g5[..., :3] * bg_tiles[:, None]).sum(-1)
        grad_table = torch.zeros_like(tiles.table)
        mono_t = tiles.monomials.transpose(0, 1)
        for tile_list, chunks in plan:
            idx = torch.tensor(tile_list, device=table.device)
            t_run = table.new_ones(len(tile_list), tiles.pixels)
            behind_in = total.index_select(0, idx)
            g5_b = g5.index_select(0, idx)
            for k0, k1 in chunks:
                ids, rows = tiles.gather(idx, k0, k1)
                og, alpha, w, t_run, stop = _composite_slab(tiles.monomials, rows, t_run)
                feats = rows[..., _FEATURES]
                f = torch.matmul(g5_b, feats.transpose(1, 2))  # f_k per pixel, [B, P, k]
                wf = w.mul(f)
                behind = wf.cumsum(dim=-1).neg_().add_(behind_in[..., None])  # S_k
                behind_in = behind[..., -1].clone()  # behind is overwritten below
                # dL/dlog(oG) = oG dL/dalpha = w_k f_k - S_k alpha_k / (1 - alpha_k) while alpha = oG.
                g_pow = wf.sub_(behind.mul_(alpha.div(torch.rsub(alpha, 1.0))))
                g_pow.masked_fill_(og >= ALPHA_MAX, 0.0)
                if stop is not None:
                    g_pow.masked_fill_(stop, 0.0)
                g_rows = _coefficient_grad_to_rows(rows, torch.matmul(mono_t, g_pow))
                g_rows[..., _FEATURES] = torch.matmul(w.transpose(1, 2), g5_b)
                grad_table.index_add_(0, ids.flatten(), g_rows.reshape(-1, _TABLE_WIDTH))
        grad_bg = None
        if ctx.needs_input_grad[1]:
            grad_bg = (t_final[..., None] * g5[..., :3]).sum(1).reshape(num_cams, -1, 3).sum(1)
        return grad_table[:-1], grad_bg, None, None, None, None


def _coefficient_grad_to_rows(rows: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Chain rule from d/d(coefficients) [B, 6, k] to d/d(mx, my, a, b, c, log o) in a [B, k, 11] tensor."""
    mx, my, a, b, c = (rows[..., i] for i in (_MX, _MY, _A, _B, _C))
    g0, g1, g2, g3, g4, g5 = g.unbind(1)
    ex, ey = g3 - mx * g5, g4 - my * g5
    out = torch.zeros_like(rows)
    out[..., _MX] = a * ex + b * ey
    out[..., _MY] = b * ex + c * ey
    out[..., _A] = -0.5 * g0 + mx * g3 - 0.5 * mx * mx * g5
    out[..., _B] = -g1 + my * g3 + mx * g4 - mx * my * g5
    out[..., _C] = -0.5 * g2 + my * g4 - 0.5 * my * my * g5
    out[..., _LOGO] = g5
    return out


class TorchRenderer:
    """Pure-PyTorch tile renderer (name ``"torch"``); see the module docstring for the algorithm.

    Args:
        tile_size: tile edge in pixels.
        max_slab_elements: most (pixel, list entry) pairs evaluated at once; bounds the working memory at
            roughly ``12 * max_slab_elements`` scalars.
    """

    name = "torch"

    def __init__(self, tile_size: int = 8, max_slab_elements: int = 1 << 19) -> None:
        if tile_size < 1 or max_slab_elements < 1:
            raise ValueError("tile_size and max_slab_elements must be positive")
        self.tile_size = tile_size
        self.max_slab_elements = max_slab_elements

    def render(self, splats: Splats, cameras: CameraBatch, backgrounds: torch.Tensor) -> RenderOutput:
        """Render ``splats`` from every camera (the :class:`~lucid_app.render.base.Renderer` contract)."""
        num_cams, n = len(cameras), splats.count
        if backgrounds.shape != (num_cams, 3):
            raise ValueError(f"backgrounds must be [C, 3] = [{num_cams}, 3], got {list(backgrounds.shape)}")
        dtype, device = splats.means.dtype, splats.means.device
        cams = cameras.to(device, dtype)
        proj = project_gaussians(splats, cams.viewmats, cams.Ks, cameras.width, cameras.height)
        if proj.means2d.requires_grad:
            proj.means2d.retain_grad()
        colors = sh_to_rgb(splats.sh_degree, splats.sh, splats.means, cams.centers)
        log_opacity = torch.log(splats.opacities.clamp_min(1e-30))
        table = torch.cat(
            [
                proj.means2d,
                proj.conics,
                log_opacity[None, :, None].expand(num_cams, n, 1),
                colors,
                proj.depths[..., None],
                torch.ones_like(proj.depths[..., None]),
            ],
            dim=-1,
        ).reshape(num_cams * n, _TABLE_WIDTH)
        bins = bin_tiles(proj, cameras.width, cameras.height, self.tile_size)
        rgb, alpha, depth = _RasterizeTiles.apply(
            table, backgrounds.to(device, dtype), bins, cameras.width, cameras.height, self.max_slab_elements
        )
        radii = torch.where(bins.visible, proj.radii, torch.zeros_like(proj.radii))
        return RenderOutput(rgb, alpha, depth, proj.means2d, radii, cameras.width, cameras.height)
