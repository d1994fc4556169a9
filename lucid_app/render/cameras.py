"""Cameras: the project's conventions (stated once, here), orbit look-at, intrinsics and the training sampler.

Conventions
-----------
- World frame: right-handed, **z up**. The object sits near the origin.
- Orbit angles: ``polar_deg`` is measured from +z (0 = straight above, 90 = on the equator);
  ``azimuth_deg`` is measured about +z, counter-clockwise seen from above, with **azimuth 0 = camera on +y**,
  which is the object's **front**. So azimuth 90 puts the camera on -x, ±180 on -y (the back).
  Position: ``r * (-sin(polar) sin(az), sin(polar) cos(az), cos(polar))``.
- Camera frame: **OpenCV** (x right, y down, z forward). ``viewmats`` are world-to-camera [4, 4] matrices.
- Intrinsics: ``fx = fy = (H / 2) / tan(fovy / 2)``, principal point at the image centre ``(W / 2, H / 2)``;
  pixel (row i, column j) has its centre at ``(j + 0.5, i + 0.5)``.
- Angles carry their unit in the name (``_deg``, ``_rad``); fovy is always the vertical field of view.
- Blender/OpenGL camera-to-world matrices (NeRF-synthetic ``transform_matrix``: x right, y up, looking down -z)
  convert with :func:`viewmats_from_opengl_c2w`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lucid_app.config import CameraConfig

WORLD_UP = (0.0, 0.0, 1.0)


@dataclass
class CameraBatch:
    """C pinhole cameras sharing one image size.

    Attributes:
        viewmats: [C, 4, 4] world-to-camera (OpenCV frame).
        Ks: [C, 3, 3] intrinsics in pixels.
        width, height: image size in pixels.
        azimuth_deg, polar_deg, radius: [C] orbit coordinates of each camera centre (about the origin).
        fovy_rad: [C] vertical field of view.
    """

    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int
    azimuth_deg: torch.Tensor
    polar_deg: torch.Tensor
    radius: torch.Tensor
    fovy_rad: torch.Tensor

    def __len__(self) -> int:
        return int(self.viewmats.shape[0])

    @property
    def centers(self) -> torch.Tensor:
        """[C, 3] camera centres in world coordinates."""
        rot = self.viewmats[:, :3, :3]
        t = self.viewmats[:, :3, 3:]
        return -(rot.transpose(1, 2) @ t)[..., 0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> CameraBatch:
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=device, dtype=dtype or x.dtype)

        return CameraBatch(
            move(self.viewmats), move(self.Ks), self.width, self.height,
            move(self.azimuth_deg), move(self.polar_deg), move(self.radius), move(self.fovy_rad),
        )

    def __getitem__(self, index: int | slice | torch.Tensor) -> CameraBatch:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return CameraBatch(
            self.viewmats[index], self.Ks[index], self.width, self.height,
            self.azimuth_deg[index], self.polar_deg[index], self.radius[index], self.fovy_rad[index],
        )


def orbit_positions(azimuth_deg: torch.Tensor, polar_deg: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Camera centres on the orbit, [...] -> [..., 3] (see the module's conventions)."""
    az = torch.deg2rad(azimuth_deg)
    po = torch.deg2rad(polar_deg)
    return torch.stack(
        [-radius * torch.sin(po) * torch.sin(az), radius * torch.sin(po) * torch.cos(az), radius * torch.cos(po)],
        dim=-1,
    )


def orbit_angles(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`orbit_positions`: [..., 3] -> (azimuth_deg in (-180, 180], polar_deg, radius)."""
    x, y, z = positions.unbind(-1)
    radius = positions.norm(dim=-1)
    polar = torch.rad2deg(torch.acos((z / radius.clamp_min(1e-12)).clamp(-1.0, 1.0)))
    azimuth = torch.rad2deg(torch.atan2(-x, y))
    return azimuth, polar, radius


def look_at(eyes: torch.Tensor, targets: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """World-to-camera matrices (OpenCV frame) for cameras at ``eyes`` looking at ``targets``.

    Args:
        eyes: [C, 3] camera centres.
        targets: [C, 3] points looked at.
        up: [C, 3] or [3] approximate world up (default +z).

    Returns:
        [C, 4, 4] viewmats. Rows of the rotation are the camera's right, down and forward axes in world space.
    """
    if up is None:
        up = torch.tensor(WORLD_UP, dtype=eyes.dtype, device=eyes.device)
    up = up.expand_as(eyes)
    forward = torch.nn.functional.normalize(targets - eyes, dim=-1)
    right = torch.linalg.cross(forward, up, dim=-1)
    # Looking straight up or down: any right vector perpendicular to forward will do.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-8
    fallback = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=eyes.dtype).expand_as(eyes), dim=-1)
    right = torch.nn.functional.normalize(torch.where(degenerate, fallback, right), dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)
    rot = torch.stack([right, down, forward], dim=-2)
    viewmats = torch.zeros(eyes.shape[0], 4, 4, dtype=eyes.dtype, device=eyes.device)
    viewmats[:, :3, :3] = rot
    viewmats[:, :3, 3] = -(rot @ eyes[..., None])[..., 0]
    viewmats[:, 3, 3] = 1.0
    return viewmats


def intrinsics(fovy_rad: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[C] vertical fields of view -> [C, 3, 3] pinhole intrinsics (square pixels, centred principal point)."""
    focal = 0.5 * height / torch.tan(0.5 * fovy_rad)
    Ks = torch.zeros(fovy_rad.shape[0], 3, 3, dtype=fovy_rad.dtype, device=fovy_rad.device)
    Ks[:, 0, 0] = focal
    Ks[:, 1, 1] = focal
    Ks[:, 0, 2] = 0.5 * width
    Ks[:, 1, 2] = 0.5 * height
    Ks[:, 2, 2] = 1.0
    return Ks


def fovy_from_focal(focal_px: float, height: int) -> float:
    return 2.0 * math.atan(0.5 * height / focal_px)


def orbit_cameras(
    azimuth_deg: torch.Tensor,
    polar_deg: torch.Tensor,
    radius: torch.Tensor,
    fovy_rad: torch.Tensor,
    width: int,
    height: int,
    targets: torch.Tensor | None = None,
    eye_offsets: torch.Tensor | None = None,
    up: torch.Tensor | None = None,
) -> CameraBatch:
    """Cameras on an orbit around the origin, all tensors [C] (float32 unless given otherwise).

    ``eye_offsets`` [C, 3] and ``targets`` [C, 3] (default the origin) implement jitter; the stored orbit
    coordinates are those of the un-jittered position.
    """
    eyes = orbit_positions(azimuth_deg, polar_deg, radius)
    if eye_offsets is not None:
        eyes = eyes + eye_offsets
    if targets is None:
        targets = torch.zeros_like(eyes)
    return CameraBatch(
        viewmats=look_at(eyes, targets, up),
        Ks=intrinsics(fovy_rad, width, height),
        width=width,
        height=height,
        azimuth_deg=azimuth_deg,
        polar_deg=polar_deg,
        radius=radius,
        fovy_rad=fovy_rad,
    )


def viewmats_from_opengl_c2w(c2w: torch.Tensor) -> torch.Tensor:
    """Blender/OpenGL camera-to-world [C, 4, 4] (x right, y up, -z forward) -> OpenCV world-to-camera [C, 4, 4]."""
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=c2w.dtype, device=c2w.device))
    return torch.linalg.inv(c2w @ flip)


def cameras_from_opengl_c2w(c2w: torch.Tensor, fovx_rad: float, width: int, height: int) -> CameraBatch:
    """A CameraBatch from NeRF-synthetic style poses (``transform_matrix``) and ``camera_angle_x``."""
    focal = 0.5 * width / math.tan(0.5 * fovx_rad)
    fovy = torch.full((c2w.shape[0],), fovy_from_focal(focal, height), dtype=c2w.dtype)
    viewmats = viewmats_from_opengl_c2w(c2w)
    azimuth, polar, radius = orbit_angles(c2w[:, :3, 3])
    return CameraBatch(viewmats, intrinsics(fovy, width, height), width, height, azimuth, polar, radius, fovy)


def turntable(
    frames: int,
    width: int,
    height: int,
    radius: float = 3.5,
    fovy_rad: float = 0.55,
    rings_polar_deg: tuple[float, ...] = (90.0,),
) -> CameraBatch:
    """A turntable path: ``frames`` cameras split evenly over the rings, each ring a full turn from the front.

    With several rings (e.g. ``(90, 60)``) the video goes round once per ring, one ring after another.
    """
    n_rings = len(rings_polar_deg)
    per_ring = [frames // n_rings + (1 if i < frames % n_rings else 0) for i in range(n_rings)]
    azimuth = torch.cat([torch.arange(n, dtype=torch.float32) * (360.0 / max(n, 1)) for n in per_ring])
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    polar = torch.cat([torch.full((n,), float(p)) for n, p in zip(per_ring, rings_polar_deg)])
    return orbit_cameras(
        azimuth, polar, torch.full((frames,), float(radius)), torch.full((frames,), float(fovy_rad)), width, height
    )


def turntable_rings(n_rings: int, default_polar_deg: float = 90.0, step_deg: float = 30.0) -> tuple[float, ...]:
    """Polar angles of ``n_rings`` rings: the default ring, then rings ``step_deg`` higher each."""
    return tuple(default_polar_deg - step_deg * i for i in range(n_rings))


def progressive_range(
    start: tuple[float, float], limit: tuple[float, float], factor: tuple[float, float], widenings: int
) -> tuple[float, float]:
    """A range after ``widenings`` progressive updates: each bound times its factor per update, clamped to limit.

    Equivalent to applying ``bound = clamp(bound * factor)`` ``widenings`` times, computed in closed form so the
    range is a pure function of the step.
    """
    out = []
    for s, lim, f in zip(start, limit, factor):
        value = s * f**widenings
        lo, hi = min(s, lim), max(s, lim)
        out.append(min(max(value, lo), hi))
    return out[0], out[1]


@dataclass(frozen=True)
class CameraRanges:
    radius: tuple[float, float]
    polar_deg: tuple[float, float]
    azimuth_deg: tuple[float, float]
    fovy_rad: tuple[float, float]


def ranges_at(config: CameraConfig, step: int) -> CameraRanges:
    """Sampling ranges in force at ``step`` (0-based); they widen every ``config.widen_every`` steps."""
    n = step // config.widen_every if config.widen_every > 0 else 0
    return CameraRanges(
        radius=progressive_range(config.radius_range, config.max_radius_range, config.radius_factor, n),
        polar_deg=progressive_range(config.polar_range_deg, config.max_polar_range_deg, config.polar_factor, n),
        azimuth_deg=progressive_range(
            config.azimuth_range_deg, config.max_azimuth_range_deg, config.azimuth_factor, n
        ),
        fovy_rad=progressive_range(config.fovy_range_rad, config.max_fovy_range_rad, config.fovy_factor, n),
    )


def _uniform(lo_hi: tuple[float, float], n: int, generator: torch.Generator) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def sample_cameras(
    config: CameraConfig, step: int, width: int, height: int, generator: torch.Generator, count: int | None = None
) -> CameraBatch:
    """Draw ``count`` (default ``config.batch_size``) training cameras for ``step``, all draws from ``generator``.

    Azimuth, polar, radius and fovy are uniform in the ranges of :func:`ranges_at`; with ``config.jitter`` the
    eye, target and up vector get small Gaussian perturbations (std ``jitter_*``), as in the reference code.
    """
    n = config.batch_size if count is None else count
    ranges = ranges_at(config, step)
    azimuth = _uniform(ranges.azimuth_deg, n, generator)
    polar = _uniform(ranges.polar_deg, n, generator)
    radius = _uniform(ranges.radius, n, generator)
    fovy = _uniform(ranges.fovy_rad, n, generator)
    eye_offsets = targets = up = None
    if config.jitter:
        eye_offsets = torch.randn(n, 3, generator=generator) * config.jitter_center
        targets = torch.randn(n, 3, generator=generator) * config.jitter_target
        up = torch.tensor(WORLD_UP) + torch.randn(n, 3, generator=generator) * config.jitter_up
    return orbit_cameras(azimuth, polar, radius, fovy, width, height, targets, eye_offsets, up)


def default_camera(config: CameraConfig, width: int, height: int, azimuth_deg: float = 0.0) -> CameraBatch:
    """One camera at the preview defaults (front by default)."""
    return orbit_cameras(
        torch.tensor([float(azimuth_deg)]),
        torch.tensor([config.default_polar_deg]),
        torch.tensor([config.default_radius]),
        torch.tensor([config.default_fovy_rad]),
        width,
        height,
    )
