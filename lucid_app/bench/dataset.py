"""The quality benchmark's dataset side: read a multi-view dataset, select an object, read its camera band.

The benchmark reads the dataset (DESIGN §5 layout) with the multi-view reader whatever prior it trains with, so the
object, its train views (the oracle's targets), its test views (the score) and the training-camera band all come
from the dataset, never from the prior or the demo's constants:
- :func:`~lucid_app.priors.multiview.read_dataset` / :func:`~lucid_app.priors.multiview.select_object_index` (in the
  multi-view prior's module, whose reader and caption matching they are): the objects;
- :func:`band_cameras` / :func:`camera_band`: the band of an object's ``transforms_train.json`` as ``cameras.*``
  config overrides (:func:`band_overrides`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lucid_app.priors.nerf_dataset import image_file, read_transforms
from lucid_app.render.cameras import CameraBatch, cameras_from_opengl_c2w

TRAIN_SPLIT = "transforms_train.json"
# Train cameras with no azimuth gap wider than this go all round: the band is the whole orbit.
FULL_ORBIT_GAP_DEG = 45.0
BAND_DECIMALS = 4


def band_cameras(folder: Path) -> CameraBatch:
    """The train cameras of an object folder at the images' own size, so that a non-square image's fovy follows
    from ``camera_angle_x`` and the aspect (square: fovy = fovx).

    Raises:
        PriorError: no usable ``transforms_train.json`` or first image.
    """
    import imageio.v3 as iio

    fovx_rad, frames = read_transforms(folder, TRAIN_SPLIT)
    height, width = iio.improps(image_file(folder, frames[0]["file_path"])).shape[:2]
    c2w = torch.tensor([frame["transform_matrix"] for frame in frames], dtype=torch.float64)
    return cameras_from_opengl_c2w(c2w, fovx_rad, int(width), int(height))


def azimuth_arc(azimuth_deg: torch.Tensor) -> tuple[float, float]:
    """The arc (lo, hi) in degrees that holds every azimuth [N]: the circle minus its widest gap between
    neighbouring azimuths, lo in [-180, 180) and hi ≥ lo (hi > 180 when the arc crosses the back; shifted by −360
    where hi would pass 360, the config's bound); (-180, 180) when no gap is wider than :data:`FULL_ORBIT_GAP_DEG`.
    """
    az = torch.sort(torch.remainder(azimuth_deg.to(torch.float64) + 180.0, 360.0) - 180.0).values
    gaps = torch.diff(az, append=az[:1] + 360.0)  # gap after each azimuth, the last one across ±180
    widest = int(torch.argmax(gaps))
    if float(gaps[widest]) <= FULL_ORBIT_GAP_DEG:
        return -180.0, 180.0
    lo = float(az[(widest + 1) % len(az)])
    hi = float(az[widest]) + (360.0 if widest + 1 < len(az) else 0.0)
    if hi > 360.0:
        lo, hi = lo - 360.0, hi - 360.0
    return lo, hi


def camera_band(cameras: CameraBatch) -> dict[str, Any]:
    """The training-camera band of a dataset's train cameras, as ``cameras.*`` override values.

    Radius: the range of the camera distances to the origin; fovy: the range of the cameras' vertical fields of
    view; polar and azimuth: the ranges of their orbit angles (``cameras.py`` conventions, :func:`azimuth_arc`).
    Each start range equals its limit (no widening), jitter is off, and the preview/turntable defaults sit in the
    middle of the band.

    Args:
        cameras: [N] the dataset's train cameras (:func:`band_cameras`).

    Returns:
        ``{"cameras.radius_range": [lo, hi], ..., "cameras.jitter": False}``, JSON-serialisable.
    """
    def span(values: torch.Tensor) -> list[float]:
        return [round(float(values.min()), BAND_DECIMALS), round(float(values.max()), BAND_DECIMALS)]

    radius, fovy, polar = span(cameras.radius), span(cameras.fovy_rad), span(cameras.polar_deg)
    azimuth = [round(v, BAND_DECIMALS) for v in azimuth_arc(cameras.azimuth_deg)]
    band: dict[str, Any] = {}
    for name, values in (("radius_range", radius), ("fovy_range_rad", fovy), ("polar_range_deg", polar),
                         ("azimuth_range_deg", azimuth)):
        band[f"cameras.{name}"] = values
        band[f"cameras.max_{name}"] = values
    band["cameras.default_radius"] = round(sum(radius) / 2, BAND_DECIMALS)
    band["cameras.default_fovy_rad"] = round(sum(fovy) / 2, BAND_DECIMALS)
    band["cameras.jitter"] = False
    return band


def band_overrides(band: dict[str, Any]) -> list[str]:
    """:func:`camera_band`'s values as ``key=value`` config overrides."""
    return [f"{key}={json.dumps(value)}" for key, value in band.items()]
