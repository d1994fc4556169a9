"""The offline demo dataset: the shipped ``assets/demo`` and its generator (``lucid_app/bench/demo_dataset.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from lucid_app.bench import demo_dataset as dd
from lucid_app.render.cameras import orbit_angles, viewmats_from_opengl_c2w
from lucid_app.config import ModelConfig
from lucid_app.scene.primitives import Primitive
from lucid_app.priors.multiview import MultiViewPrior, load_multiview_prior
from lucid_app.render import make_renderer
from tests.helpers import REPO

DEMO = REPO / "assets" / "demo"
CAPTIONS = ["a potted flower", "a snowman", "a red toy car"]  # folder order: potted_flower, snowman, toy_car


@pytest.fixture(scope="module")
def prior() -> MultiViewPrior:
    return load_multiview_prior(DEMO, ModelConfig(multiview_resolution=dd.DEFAULT_SIZE_PX))


@pytest.fixture(scope="module")
def renderer():
    return make_renderer("torch", "cpu")


def test_shipped_dataset_loads_with_captions_splits_and_cameras(prior: MultiViewPrior) -> None:
    assert prior.captions == CAPTIONS
    assert [o.name for o in dd.demo_objects()] == sorted(p.name for p in DEMO.iterdir() if p.is_dir())
    for obj in prior.objects:
        assert obj.train_images.shape == (dd.DEFAULT_TRAIN_VIEWS, 64, 64, 3)
        assert obj.test_images is not None and obj.test_images.shape[0] == dd.DEFAULT_TEST_VIEWS
        for cams in (obj.train_cameras, obj.test_cameras):
            torch.testing.assert_close(cams.radius, torch.full_like(cams.radius, dd.RADIUS), atol=1e-4, rtol=0)
            torch.testing.assert_close(cams.fovy_rad, torch.full_like(cams.fovy_rad, dd.FOVY_RAD), atol=1e-5, rtol=0)
            assert cams.polar_deg.min() >= 60.0 - 1e-3 and cams.polar_deg.max() <= 100.0 + 1e-3
        # All around: no azimuth gap wider than 15 degrees in the train split.
        az = torch.sort(obj.train_cameras.azimuth_deg).values
        gaps = torch.cat([az[1:] - az[:-1], (az[:1] + 360.0) - az[-1:]])
        assert gaps.max() < 15.0
        # The images show something on white: neither blank nor all object.
        coverage = (obj.train_images < 0.9).any(dim=-1).float().mean()
        assert 0.05 < coverage < 0.6


def test_test_views_are_held_out(prior: MultiViewPrior) -> None:
    obj = prior.objects[0]
    train_dirs = torch.nn.functional.normalize(obj.train_cameras.centers, dim=-1)
    test_dirs = torch.nn.functional.normalize(obj.test_cameras.centers, dim=-1)
    angle_deg = torch.rad2deg(torch.acos((test_dirs @ train_dirs.T).clamp(-1, 1)))
    assert angle_deg.min(dim=1).values.min() > 0.05


def test_written_c2w_round_trips_to_our_viewmats() -> None:
    azimuth, polar = dd.grid_views(dd.DEFAULT_TRAIN_VIEWS)
    cameras = dd.demo_cameras(azimuth, polar, 64)
    c2w = dd.opengl_c2w_from_viewmats(cameras.viewmats)
    torch.testing.assert_close(viewmats_from_opengl_c2w(c2w), cameras.viewmats, atol=1e-5, rtol=0)
    # Blender camera: centre on the orbit, looking down its -z at the origin, its +y towards world up.
    torch.testing.assert_close(c2w[:, :3, 3], cameras.centers, atol=1e-5, rtol=0)
    look = -c2w[:, :3, 2]
    torch.testing.assert_close(look, -torch.nn.functional.normalize(c2w[:, :3, 3], dim=-1), atol=1e-5, rtol=0)
    assert (c2w[:, 2, 1] > 0).all()
    az, po, radius = orbit_angles(c2w[:, :3, 3])
    torch.testing.assert_close(po, polar, atol=1e-3, rtol=0)
    wrapped = torch.remainder(az - azimuth + 180.0, 360.0) - 180.0
    torch.testing.assert_close(wrapped, torch.zeros_like(az), atol=1e-3, rtol=0)
    # The shipped file holds exactly these poses.
    stored = json.loads((DEMO / "snowman" / "transforms_train.json").read_text())
    stored_c2w = torch.tensor([f["transform_matrix"] for f in stored["frames"]])
    torch.testing.assert_close(stored_c2w, c2w, atol=1e-5, rtol=0)
    assert stored["camera_angle_x"] == pytest.approx(dd.FOVY_RAD)


@pytest.mark.parametrize("split, index", [("train", 0), ("test", 3)])
def test_rerendering_a_view_reproduces_the_stored_png(renderer, split: str, index: int) -> None:
    folder = DEMO / "toy_car"
    meta = json.loads((folder / f"transforms_{split}.json").read_text())
    settings = meta[dd.GENERATOR_KEY]
    obj = {o.name: o for o in dd.demo_objects()}[settings["object"]]
    splats = dd.object_splats(obj, settings["num_points"], torch.Generator().manual_seed(settings["seed"]))
    c2w = torch.tensor([meta["frames"][index]["transform_matrix"]])
    az, polar, _ = orbit_angles(c2w[:, :3, 3])
    cameras = dd.demo_cameras(az, polar, settings["size_px"])
    rendered = dd.render_rgba(renderer, splats, cameras)[0].astype(int)
    stored = iio.imread(folder / f"{meta['frames'][index]['file_path']}.png").astype(int)
    assert stored.shape == (settings["size_px"], settings["size_px"], 4)
    assert np.abs(rendered - stored).max() <= 1
    assert stored[..., 3].max() == 255 and stored[..., 3].min() == 0


def _foreground_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two [H, W, 3] images over the pixels where either shows the object."""
    foreground = ((a < 0.95) | (b < 0.95)).any(dim=-1)
    return float((a - b).abs().mean(dim=-1)[foreground].mean())


def _mirror_differences(
    front: torch.Tensor, back: torch.Tensor, left: torch.Tensor, right: torch.Tensor
) -> list[float]:
    """Front vs back, mirrored front vs back, mirrored left vs right: all ~0 for a mirror-symmetric object."""
    pairs = ((front, back), (front.flip(1), back), (left.flip(1), right))
    return [_foreground_difference(a, b) for a, b in pairs]


ASYMMETRY_MIN = 0.03


def test_objects_look_different_from_front_back_and_sides(prior: MultiViewPrior) -> None:
    for obj in prior.objects:
        cams = obj.train_cameras
        ring = (cams.polar_deg - cams.polar_deg[0]).abs() < 1e-3  # one polar ring of the grid

        def view(azimuth_deg: float) -> torch.Tensor:
            delta = torch.remainder(cams.azimuth_deg - azimuth_deg + 180.0, 360.0) - 180.0
            return obj.train_images[torch.where(ring, delta.abs(), torch.inf).argmin()]

        differences = _mirror_differences(view(0.0), view(180.0), view(90.0), view(-90.0))
        assert min(differences) > ASYMMETRY_MIN, (obj.caption, differences)


def test_asymmetry_measure_is_small_for_a_symmetric_object(renderer) -> None:
    """Control for the test above: the same measure on a mirror-symmetric object stays well below the bound."""
    symmetric = dd.DemoObject("control", "a symmetric control", (
        Primitive("ellipsoid", (0.0, 0.0, -0.3), (0.4, 0.4, 0.4), dd.WHITE),
        Primitive("cylinder", (0.0, 0.0, 0.2), (0.2, 0.2, 0.2), dd.RED),
        Primitive("box", (0.0, 0.0, 0.5), (0.3, 0.1, 0.1), dd.BLUE),
    ))
    splats = dd.object_splats(symmetric, 4000, torch.Generator().manual_seed(0))
    polar = dd.grid_views(dd.DEFAULT_TRAIN_VIEWS)[1][0].expand(4)
    cameras = dd.demo_cameras(torch.tensor([0.0, 180.0, 90.0, -90.0]), polar, 48)
    rgba = torch.from_numpy(dd.render_rgba(renderer, splats, cameras)).double() / 255.0
    images = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    assert max(_mirror_differences(*images)) < ASYMMETRY_MIN / 3


def test_grid_views_cover_the_band_with_square_cells() -> None:
    azimuth, polar = dd.grid_views(300)
    assert azimuth.shape == polar.shape == (300,)
    rings = torch.unique(polar)
    assert len(rings) == 6
    torch.testing.assert_close(rings, 60.0 + (torch.arange(6) + 0.5) * 40.0 / 6)
    assert azimuth.min() >= -180.0 and azimuth.max() < 180.0
    with pytest.raises(ValueError):
        dd.grid_views(0)


def test_tiny_dataset_is_byte_identical_for_equal_seeds(tmp_path: Path, renderer) -> None:
    objects = dd.demo_objects()[1:2]

    def build(name: str, seed: int) -> dict[str, bytes]:
        root = tmp_path / name
        dd.build_demo_dataset(root, renderer, size_px=16, train_views=4, test_views=2, num_points=600, seed=seed,
                              objects=objects)
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first, second, other = build("a", 3), build("b", 3), build("c", 4)
    assert len(first) == 4 + 2 + 3  # PNGs, two transforms files, caption
    assert first == second
    assert first["snowman/train/r_0.png"] != other["snowman/train/r_0.png"]
    tiny = load_multiview_prior(tmp_path / "a", ModelConfig(multiview_resolution=16))
    assert tiny.captions == ["a snowman"] and tiny.num_images == 4
    assert tiny.objects[0].test_images.shape == (2, 16, 16, 3)
