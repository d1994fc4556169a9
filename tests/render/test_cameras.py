"""Camera conventions, orbit look-at, intrinsics, the progressive sampler and turntables."""

from __future__ import annotations

import math

import pytest
import torch

from lucid_app.render.cameras import (
    cameras_from_opengl_c2w,
    look_at,
    orbit_angles,
    orbit_cameras,
    orbit_positions,
    progressive_range,
    ranges_at,
    sample_cameras,
    turntable,
    turntable_rings,
    viewmats_from_opengl_c2w,
)
from lucid_app.config import CameraConfig


def project(cams, points: torch.Tensor) -> torch.Tensor:
    """[C] cameras, [P, 3] points -> [C, P, 3] (u, v, z) pixels and depth."""
    homo = torch.cat([points, torch.ones(points.shape[0], 1, dtype=points.dtype)], dim=-1)
    cam = (cams.viewmats @ homo.T).transpose(1, 2)[..., :3]
    uv = (cams.Ks @ cam.transpose(1, 2)).transpose(1, 2)
    return torch.cat([uv[..., :2] / uv[..., 2:], cam[..., 2:]], dim=-1)


def one(azimuth: float, polar: float = 90.0, radius: float = 4.0, fovy: float = 0.6, w: int = 64, h: int = 48):
    t = torch.tensor
    return orbit_cameras(t([azimuth]), t([polar]), t([radius]), t([fovy]), w, h)


def test_front_camera_is_on_plus_y_and_sees_the_origin_at_the_centre() -> None:
    cam = one(0.0)
    assert torch.allclose(cam.centers[0], torch.tensor([0.0, 4.0, 0.0]), atol=1e-5)
    uvz = project(cam, torch.zeros(1, 3))[0, 0]
    assert torch.allclose(uvz, torch.tensor([32.0, 24.0, 4.0]), atol=1e-4)


@pytest.mark.parametrize(("azimuth", "expected"), [(90.0, (-4.0, 0.0, 0.0)), (180.0, (0.0, -4.0, 0.0)),
                                                   (-90.0, (4.0, 0.0, 0.0))])
def test_azimuth_turns_counter_clockwise_from_above(azimuth: float, expected: tuple) -> None:
    assert torch.allclose(one(azimuth).centers[0], torch.tensor(expected), atol=1e-5)


def test_world_up_is_image_up_and_polar_zero_is_above() -> None:
    cam = one(30.0)
    uv_origin, uv_top = project(cam, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]))[0, :, 1]
    assert uv_top < uv_origin  # OpenCV: v grows downwards
    top = orbit_positions(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(2.0))
    assert torch.allclose(top, torch.tensor([0.0, 0.0, 2.0]), atol=1e-6)


def test_look_at_is_a_rigid_transform_even_looking_straight_down() -> None:
    eyes = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    viewmats = look_at(eyes, torch.zeros(2, 3))
    rot = viewmats[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(2), atol=1e-5)
    cam_eyes = (viewmats @ torch.cat([eyes, torch.ones(2, 1)], -1)[..., None])[:, :3, 0]
    assert torch.allclose(cam_eyes, torch.zeros(2, 3), atol=1e-5)


def test_fovy_reaches_the_top_edge() -> None:
    fovy, radius = 0.6, 4.0
    cam = one(0.0, radius=radius, fovy=fovy)
    edge = torch.tensor([[0.0, 0.0, radius * math.tan(fovy / 2)]])
    assert project(cam, edge)[0, 0, 1].item() == pytest.approx(0.0, abs=1e-3)


def test_orbit_angles_invert_orbit_positions() -> None:
    g = torch.Generator().manual_seed(0)
    az = torch.rand(50, generator=g) * 360 - 179.9
    po = torch.rand(50, generator=g) * 170 + 5
    r = torch.rand(50, generator=g) * 3 + 1
    az2, po2, r2 = orbit_angles(orbit_positions(az, po, r))
    assert torch.allclose(az2, az, atol=1e-3) and torch.allclose(po2, po, atol=1e-3)
    assert torch.allclose(r2, r, atol=1e-5)


def test_opengl_c2w_matches_look_at() -> None:
    cam = one(40.0, polar=70.0)
    # Build the Blender/OpenGL camera-to-world of the same camera: columns right, up, backward, centre.
    rot = cam.viewmats[0, :3, :3]
    right, down, forward = rot[0], rot[1], rot[2]
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, -down, -forward, cam.centers[0]
    assert torch.allclose(viewmats_from_opengl_c2w(c2w[None]), cam.viewmats, atol=1e-5)
    batch = cameras_from_opengl_c2w(c2w[None], fovx_rad=0.6, width=64, height=48)
    assert batch.azimuth_deg.item() == pytest.approx(40.0, abs=1e-3)
    assert batch.polar_deg.item() == pytest.approx(70.0, abs=1e-3)
    assert batch.Ks[0, 0, 0].item() == pytest.approx(32 / math.tan(0.3), rel=1e-5)


def test_progressive_range_is_clamped_repetition() -> None:
    start, limit, factor = (-80.0, 60.0), (-180.0, 180.0), (1.5, 1.5)
    bounds = list(start)
    for n in range(6):
        assert progressive_range(start, limit, factor, n) == pytest.approx(tuple(bounds))
        bounds = [max(-180.0, bounds[0] * 1.5), min(180.0, bounds[1] * 1.5)]


def test_ranges_widen_exactly_every_n_steps() -> None:
    cfg = CameraConfig()
    assert ranges_at(cfg, 499) == ranges_at(cfg, 0)
    r0, r1 = ranges_at(cfg, 0), ranges_at(cfg, 500)
    assert r0.radius == (5.2, 5.5) and r0.fovy_rad == (0.32, 0.60)
    assert r1.radius == pytest.approx((5.2 * 0.95, 5.5 * 0.95))
    assert r1.fovy_rad == pytest.approx((0.32 * 0.75, 0.60))
    assert ranges_at(cfg, 999) == r1
    final = ranges_at(cfg, 100_000)
    assert final.radius == pytest.approx((3.5, 5.0)) and final.fovy_rad == pytest.approx((0.16, 0.60))
    assert final.polar_deg == (45.0, 105.0) and final.azimuth_deg == (-180.0, 180.0)


def test_sampler_is_seeded_and_in_range() -> None:
    cfg = CameraConfig(azimuth_range_deg=(-80.0, 80.0), jitter=False)
    a = sample_cameras(cfg, 0, 32, 32, torch.Generator().manual_seed(3), count=200)
    torch.manual_seed(123)  # the global RNG must not matter
    b = sample_cameras(cfg, 0, 32, 32, torch.Generator().manual_seed(3), count=200)
    c = sample_cameras(cfg, 0, 32, 32, torch.Generator().manual_seed(4), count=200)
    assert torch.equal(a.viewmats, b.viewmats) and not torch.equal(a.viewmats, c.viewmats)
    assert a.azimuth_deg.min() >= -80 and a.azimuth_deg.max() <= 80
    assert a.polar_deg.min() >= 45 and a.polar_deg.max() <= 105
    assert a.radius.min() >= 5.2 and a.radius.max() <= 5.5
    assert torch.allclose(a.centers.norm(dim=-1), a.radius, atol=1e-4)
    late = sample_cameras(cfg, 5000, 32, 32, torch.Generator().manual_seed(3), count=400)
    assert late.azimuth_deg.min() < -150 and late.azimuth_deg.max() > 150
    assert late.fovy_rad.min() < 0.25


def test_jitter_moves_cameras_slightly() -> None:
    base = CameraConfig(jitter=False)
    jit = CameraConfig(jitter=True)
    a = sample_cameras(base, 0, 32, 32, torch.Generator().manual_seed(1), count=64)
    b = sample_cameras(jit, 0, 32, 32, torch.Generator().manual_seed(1), count=64)
    shift = (b.centers - orbit_positions(b.azimuth_deg, b.polar_deg, b.radius)).norm(dim=-1)
    assert 0.0 < shift.mean() < 0.2
    assert a.viewmats.shape == b.viewmats.shape == (64, 4, 4)


def test_turntable_rings() -> None:
    rings = turntable_rings(2)
    assert rings == (90.0, 60.0)
    cams = turntable(240, 32, 32, rings_polar_deg=rings)
    assert len(cams) == 240
    assert cams.azimuth_deg[0] == 0.0 and cams.azimuth_deg[120] == 0.0
    assert torch.all(cams.polar_deg[:120] == 90.0) and torch.all(cams.polar_deg[120:] == 60.0)
    steps = torch.diff(cams.azimuth_deg[:120]) % 360
    assert torch.allclose(steps, torch.full_like(steps, 3.0), atol=1e-3)
