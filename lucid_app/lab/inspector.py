"""Pseudo-GT inspector: the x₀ estimates SDS, SDI and ISM pull a render towards, and how much they vary by seed.

LucidDreamer (supplementary Fig. 1) motivates ISM by SDS's pseudo-ground-truths: SDS's one-step estimate
x̂₀ᵗ from x₀ noised with fresh noise is blurry and *inconsistent* across noise draws, while ISM's estimate from
the DDIM-inverted x_t is sharp and nearly deterministic. SDI (:mod:`lucid_app.guidance.sdi`) estimates from its
own prompt-conditioned inversion to t; its seeds differ only by the inversion's η noise (``sdi_eta``; none at 0).
For one render set this module computes, for each t (and δ_T for ISM), with and without the negative prompt, the
pseudo-GTs of several seeds — exactly the ``previews["pred_x0"]`` of :func:`sds_guidance` / :func:`sdi_guidance` /
:func:`ism_guidance` with the timestep forced — and
    inconsistency = mean over pixels, channels and cameras of the per-pixel standard deviation across seeds
(population std, images in [0, 1] after ``prior.decode``). Pure functions on tensors; files are written by the
caller (the CLI through ``export.write_png``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lucid_app.config import GuidanceConfig, OptimConfig, PromptConfig, replace
from lucid_app.guidance.base import Guidance
from lucid_app.guidance.ism import ism_guidance
from lucid_app.guidance.prompts import PromptEmbeddings, encode_prompt_set
from lucid_app.guidance.sdi import sdi_guidance
from lucid_app.guidance.sds import sds_guidance
from lucid_app.io.ply import GaussianPly, read_gaussian_ply
from lucid_app.priors.base import DiffusionPrior, camera_control_fn
from lucid_app.render import make_renderer
from lucid_app.render.cameras import CameraBatch, orbit_cameras
from lucid_app.scene.gaussians import GaussianModel

logger = logging.getLogger(__name__)

GRID_GAP_PX = 2  # white gap between grid tiles
NEGATIVE_VARIANTS = ("neg", "noneg")  # with the prompt's negative, and with the empty one (true unconditional)
# The inspected methods; those with one row per t (no interval), then ISM with one row per t and δ_T.
PSEUDO_GT_GUIDANCES: dict[str, Guidance] = {"sds": sds_guidance, "sdi": sdi_guidance, "ism": ism_guidance}
PER_T_METHODS = ("sds", "sdi")


@dataclass(frozen=True)
class InspectSettings:
    """Which pseudo-GTs to compute: timestep indices, ISM intervals δ_T, number of seeds (0..seeds-1), and which
    of ``NEGATIVE_VARIANTS`` (with / without the negative prompt)."""

    timesteps: tuple[int, ...] = (200, 500)
    delta_ts: tuple[int, ...] = (20, 200)
    seeds: int = 3
    negatives: tuple[str, ...] = NEGATIVE_VARIANTS

    @property
    def n_rows(self) -> int:
        """Rows of the grid (= entries of the numbers): SDS and SDI per t, ISM per t and δ_T, each per negative
        variant."""
        return len(self.timesteps) * (len(PER_T_METHODS) + len(self.delta_ts)) * len(self.negatives)


def pseudo_gts(
    prior: DiffusionPrior,
    x0: torch.Tensor,
    azimuth_deg: torch.Tensor,
    prompts: PromptEmbeddings,
    config: GuidanceConfig,
    method: str,
    t: int,
    delta_t: int,
    seeds: int,
    control: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decoded pseudo-GTs [S, C, H, W, 3] in [0, 1] of ``method`` ("sds", "sdi" or "ism") at t (and δ_T, ISM only),
    seeds 0..S-1.

    Args:
        x0: [C, ...] the views in the prior's space (``prior.encode_images`` of the renders).
        azimuth_deg: [C] camera azimuths (view prompts).
        prompts: the encoded prompts (:func:`encode_prompt_set`); the negative takes CFG's unconditional branch
            (supplementary eq. 1).
        control: the prior's per-view ``control`` as in training (:func:`prior_control`), or None.
    """
    if method not in PSEUDO_GT_GUIDANCES:
        raise ValueError(f"pseudo_gts: method must be one of {sorted(PSEUDO_GT_GUIDANCES)}, got {method!r}")
    estimates = []
    for seed in range(seeds):
        out = PSEUDO_GT_GUIDANCES[method](
            prior, x0.detach(), azimuth_deg, prompts, 0, config, torch.Generator(device=x0.device).manual_seed(seed),
            delta_t=delta_t, return_previews=True, t=t, control=control,
        )
        estimates.append(prior.decode(out.previews["pred_x0"]).float().cpu())
    return torch.stack(estimates)


def inconsistency(images: torch.Tensor) -> float:
    """[S, C, H, W, 3] → mean over C, H, W, 3 of the population std across the S seeds (0 for S = 1)."""
    return float(images.std(dim=0, correction=0).mean())


def _tile_row(tiles: list[torch.Tensor]) -> torch.Tensor:
    """[H, W, 3] tiles (resized to the first one's size) → one [H + gap, n·(W + gap), 3] row."""
    h, w = tiles[0].shape[:2]
    padded = []
    for tile in tiles:
        if tile.shape[:2] != (h, w):
            tile = F.interpolate(tile.permute(2, 0, 1)[None], size=(h, w), mode="bilinear")[0].permute(1, 2, 0)
        padded.append(F.pad(tile.permute(2, 0, 1), (0, GRID_GAP_PX, 0, GRID_GAP_PX), value=1.0).permute(1, 2, 0))
    return torch.cat(padded, dim=1)


def inspect_pseudo_gt(
    prior: DiffusionPrior,
    renders: torch.Tensor,
    azimuth_deg: torch.Tensor,
    prompt_config: PromptConfig,
    config: GuidanceConfig | None = None,
    settings: InspectSettings = InspectSettings(),
    progress: Callable[[int, int], None] | None = None,
    control: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Pseudo-GTs of SDS, SDI and ISM for ``renders``, as a grid image and inconsistency numbers.

    Rows, in the order of the returned dict's keys: for each t, ``sds_t{t}_neg`` and ``sds_t{t}_noneg``, then the
    same for SDI (``sdi_t{t}_...``), then for each t and δ_T ``ism_t{t}_dt{δ_T}_neg`` / ``_noneg`` (with
    ``prompt_config.negative``, and with the empty negative prompt = the true unconditional). Each row holds, per
    camera, the render x₀ (decoded) followed by the S seeds' pseudo-GTs.

    Args:
        renders: [C, H, W, 3] in [0, 1].
        azimuth_deg: [C] their cameras' azimuths.
        config: guidance settings (CFG scale, ISM's and SDI's inversions); default :class:`GuidanceConfig`.
        progress: called as ``progress(rows_done, settings.n_rows)`` before the first row and after each one.
        control: the prior's per-view ``control`` as in training (:func:`prior_control` of the cameras), or None.

    Returns:
        (grid uint8 [H_grid, W_grid, 3], {row label: inconsistency}).
    """
    config = config or GuidanceConfig()
    unknown = set(settings.negatives) - set(NEGATIVE_VARIANTS)
    if unknown or not settings.negatives:
        raise ValueError(f"InspectSettings.negatives: pick from {NEGATIVE_VARIANTS}, got {settings.negatives}")
    report = progress or (lambda done, total: None)
    report(0, settings.n_rows)
    x0 = prior.encode_images(renders.to(prior.device)).detach()
    shown = prior.decode(x0).float().cpu()
    negatives = {"neg": prompt_config.negative, "noneg": ""}
    variants = {tag: encode_prompt_set(prior, replace(prompt_config, negative=negatives[tag]))
                for tag in NEGATIVE_VARIANTS if tag in settings.negatives}
    rows: dict[str, torch.Tensor] = {}
    for method in PER_T_METHODS:
        for t in settings.timesteps:
            for tag, prompts in variants.items():
                rows[f"{method}_t{t}_{tag}"] = pseudo_gts(prior, x0, azimuth_deg, prompts, config, method, t, 0,
                                                          settings.seeds, control)
                report(len(rows), settings.n_rows)
    for t in settings.timesteps:
        for dt in settings.delta_ts:
            for tag, prompts in variants.items():
                rows[f"ism_t{t}_dt{dt}_{tag}"] = pseudo_gts(
                    prior, x0, azimuth_deg, prompts, config, "ism", t, dt, settings.seeds, control
                )
                report(len(rows), settings.n_rows)
    numbers = {label: inconsistency(images) for label, images in rows.items()}
    grid_rows = []
    for images in rows.values():
        tiles = [tile for c in range(shown.shape[0]) for tile in (shown[c], *images[:, c])]
        grid_rows.append(_tile_row(tiles))
    grid = torch.cat(grid_rows, dim=0)
    return (grid.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8), numbers


def prior_control(prior: DiffusionPrior, cameras: CameraBatch) -> torch.Tensor | None:
    """The ``control`` training would pass for ``cameras``: a camera-conditioned prior's camera directions
    (``priors.base.camera_control_fn``), else None (ControlNet controls come from the avatar, not from here)."""
    control_fn = camera_control_fn(prior)
    return None if control_fn is None else control_fn(cameras.to(prior.device))


def orbit_views(
    azimuth_deg: torch.Tensor, elevation_deg: float, radius: float, size_px: int, fovy_rad: float
) -> CameraBatch:
    """Orbit cameras [C] at ``azimuth_deg`` [C], polar = 90° − elevation, all at ``radius`` and ``fovy_rad``."""
    n = azimuth_deg.shape[0]
    return orbit_cameras(
        azimuth_deg.float(), torch.full((n,), 90.0 - elevation_deg), torch.full((n,), float(radius)),
        torch.full((n,), float(fovy_rad)), size_px, size_px,
    )


def render_ply_cameras(
    ply_path: str | Path,
    cameras: CameraBatch,
    device: torch.device | str = "cpu",
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Renders [C, H, W, 3] in [0, 1] of a 3DGS ``.ply`` from any ``cameras``, with the automatic renderer."""
    return render_raw_cameras(read_gaussian_ply(ply_path), cameras, device, background)


def render_raw_cameras(
    raw: GaussianPly,
    cameras: CameraBatch,
    device: torch.device | str = "cpu",
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Renders [C, H, W, 3] in [0, 1] of raw Gaussians (a ``.ply``'s, or a running job's snapshot) from ``cameras``."""
    splats = GaussianModel.from_raw(raw, OptimConfig(), device=device).splats()
    cameras = cameras.to(splats.means.device, splats.means.dtype)
    bg = torch.tensor(background, dtype=splats.means.dtype, device=splats.means.device).expand(len(cameras), 3)
    with torch.no_grad():
        return make_renderer("auto", torch.device(device)).render(splats, cameras, bg).rgb.clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- the labelled grid

LABEL_PAD_PX = 4
# Height of one line of labels: the header holds the title, the views' names and the columns' names.
LABEL_LINE_PX = 16
LABEL_INK = (20, 20, 20)


def row_label(key: str) -> str:
    """A grid row's key as :func:`inspect_pseudo_gt` names it → its label: ``ism_t200_dt20_neg`` → "ISM t=200 dT=20
    neg", ``sds_t500_noneg`` → "SDS t=500 no neg"."""
    method, t, *rest = key.split("_")
    dt, variant = (rest[0], rest[1]) if len(rest) == 2 else ("", rest[0])
    parts = [method.upper(), f"t={t[1:]}", *([f"dT={dt[2:]}"] if dt else []), "neg" if variant == "neg" else "no neg"]
    return " ".join(parts)


def label_grid(grid: np.ndarray, rows: list[str], n_views: int, seeds: int, title: str = "") -> np.ndarray:
    """The inspector's grid with its labels drawn in: a title line, a header naming each view's columns (the render
    x₀, "x0", then seed 0..S-1, "s0"...) and each row's method, t, δ_T and negative variant on the left.

    Args:
        grid: [H, W, 3] uint8, ``len(rows)`` rows of ``n_views · (1 + seeds)`` equal tiles (each with its gap).
        rows: the row keys (the numbers' keys of :func:`inspect_pseudo_gt`, in order).

    Returns:
        [H + header, W + margin, 3] uint8 on white.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    row_texts = [row_label(key) for key in rows]
    tile_h = grid.shape[0] // max(len(rows), 1)
    tile_w = grid.shape[1] // max(n_views * (1 + seeds), 1)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str) -> int:
        return int(measure.textlength(text, font=font))

    line_h = LABEL_LINE_PX
    margin = max((width(text) for text in row_texts), default=0) + 2 * LABEL_PAD_PX
    columns = [c for _ in range(n_views) for c in ("x0", *(f"s{s}" for s in range(seeds)))]
    header = (line_h if title else 0) + 2 * line_h
    canvas = Image.new("RGB", (grid.shape[1] + margin, grid.shape[0] + header), (255, 255, 255))
    canvas.paste(Image.fromarray(grid), (margin, header))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((LABEL_PAD_PX, 1), title, fill=LABEL_INK, font=font)
    top = line_h if title else 0
    group_w = tile_w * (1 + seeds)
    for v in range(n_views):
        draw.text((margin + v * group_w + LABEL_PAD_PX, top + 1), f"view {v + 1}", fill=LABEL_INK, font=font)
    for i, text in enumerate(columns):
        draw.text((margin + i * tile_w + max(0, (tile_w - width(text)) // 2), top + line_h + 1), text,
                  fill=LABEL_INK, font=font)
    for r, text in enumerate(row_texts):
        draw.text((LABEL_PAD_PX, header + r * tile_h + max(0, (tile_h - line_h) // 2)), text, fill=LABEL_INK,
                  font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()
