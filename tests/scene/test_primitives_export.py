"""Primitive sampling and the atomic image/video writers."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from lucid_app.io.files import atomic_path
from lucid_app.io.media import to_uint8, write_png, write_video
from lucid_app.scene.primitives import Primitive, primitives_to_points, sample_surface, surface_area


def test_ellipsoid_and_box_samples_lie_on_their_surfaces() -> None:
    g = torch.Generator().manual_seed(0)
    ell = Primitive("ellipsoid", (0.5, -0.2, 0.1), (0.6, 0.4, 0.3), (1.0, 0.0, 0.0))
    x = sample_surface(ell, 500, g) - torch.tensor(ell.center)
    assert torch.allclose(((x / torch.tensor(ell.size)) ** 2).sum(-1), torch.ones(500), atol=1e-5)
    box = Primitive("box", (0.0, 0.0, 0.0), (1.0, 0.5, 0.25), (0.0, 1.0, 0.0))
    y = sample_surface(box, 500, g).abs() / torch.tensor(box.size)
    assert torch.allclose(y.max(-1).values, torch.ones(500), atol=1e-5)


def test_cone_points_along_its_axis() -> None:
    g = torch.Generator().manual_seed(1)
    cone = Primitive("cone", (0.0, 0.0, 0.0), (0.2, 0.2, 0.5), (1.0, 0.5, 0.0), axis=(0.0, 1.0, 0.0))
    x = sample_surface(cone, 2000, g)
    # Apex at +y: the widest cross-section is at the base (y = -0.5), points near the tip are near the axis.
    tip = x[x[:, 1] > 0.4]
    assert tip[:, [0, 2]].norm(dim=-1).max() < 0.2 * 0.15
    assert x[:, 1].min() == pytest.approx(-0.5, abs=1e-4)


def test_points_are_shared_by_area_and_coloured() -> None:
    g = torch.Generator().manual_seed(2)
    big = Primitive("ellipsoid", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0))
    small = Primitive("ellipsoid", (3.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.0, 0.0, 1.0))
    points, colors = primitives_to_points([big, small], 1000, g)
    red = (colors[:, 0] == 1.0).sum().item()
    assert red / points.shape[0] == pytest.approx(surface_area(big) / (surface_area(big) + surface_area(small)),
                                                  abs=0.01)
    assert torch.all(points[colors[:, 2] == 1.0][:, 0] > 2.4)


def test_to_uint8_rounds_and_clips() -> None:
    img = np.array([[[0.0, 0.5, 1.2]]], dtype=np.float32)
    assert to_uint8(img).tolist() == [[[0, 128, 255]]]
    assert to_uint8(torch.full((1, 1, 3), float("nan"))).tolist() == [[[0, 0, 0]]]


def test_png_and_video_round_trip(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (9, 7, 3), dtype=np.uint8)
    png = write_png(tmp_path / "a" / "img.png", image)
    assert np.array_equal(iio.imread(png), image)
    frames = [np.full((10, 14, 3), 20 * i, dtype=np.uint8) for i in range(12)]
    assert write_video(tmp_path / "v.mp4", iter(frames), fps=12, size=(14, 10)) == 12
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "v.mp4"))
    meta = next(reader)
    decoded = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    assert len(decoded) == 12 and meta["size"] == (14, 10)
    assert abs(int(decoded[5].mean()) - 100) <= 3


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "model.ply"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ply"]
