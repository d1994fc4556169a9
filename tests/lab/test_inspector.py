"""Pseudo-GT inspector on a tiny one-object multi-view prior, and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from lucid_app.cli.main import main
from lucid_app.config import GuidanceConfig, ModelConfig, PromptConfig
from lucid_app.guidance.prompts import encode_prompt_set
from lucid_app.guidance.sdi import sdi_guidance
from lucid_app.lab.inspector import (
    LABEL_LINE_PX,
    InspectSettings,
    inconsistency,
    inspect_pseudo_gt,
    label_grid,
    orbit_views,
    prior_control,
    row_label,
)
from lucid_app.bench.metrics import psnr
from lucid_app.io.ply import write_gaussian_ply
from lucid_app.priors.multiview import MultiViewPrior, load_multiview_prior
from tests.helpers import random_gaussians, write_object

SIZE = 8
VIEWS = [(0.0, 80.0), (90.0, 80.0), (180.0, 80.0), (-90.0, 80.0)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inspect") / "chair"
    write_object(folder, "a red chair", VIEWS, seed=0)
    return folder


@pytest.fixture(scope="module")
def prior(dataset: Path) -> MultiViewPrior:
    """The default ("snr") kernel: near the data the estimate stays near its input, as a trained model's does.
    With σ = 0 the denoiser snaps to a dataset image at every noise level, so its ε̂ jumps wherever the posterior
    flips and a long DDIM inversion (t = 500, δ_T = 20) turns chaotic — not what the test is about."""
    return load_multiview_prior(dataset, ModelConfig(multiview_resolution=SIZE))


def test_inconsistency_is_mean_per_pixel_std() -> None:
    images = torch.stack([torch.zeros(1, 2, 2, 3), torch.ones(1, 2, 2, 3)])
    assert inconsistency(images) == pytest.approx(0.5)
    assert inconsistency(images[:1]) == 0.0


def test_ism_pseudo_gts_are_far_more_consistent_than_sds(prior: MultiViewPrior) -> None:
    renders = torch.rand(2, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(5))
    grid, numbers = inspect_pseudo_gt(prior, renders, torch.tensor([0.0, 90.0]), PromptConfig(text="a red chair"))
    n_rows, seeds = 2 * 2 + 2 * 2 + 2 * 2 * 2, 3  # SDS and SDI per t, ISM per t and δ_T; each with/without neg
    assert grid.dtype == torch.uint8 and grid.shape == (n_rows * (SIZE + 2), 2 * (1 + seeds) * (SIZE + 2), 3)
    assert list(numbers)[:6] == ["sds_t200_neg", "sds_t200_noneg", "sds_t500_neg", "sds_t500_noneg",
                                 "sdi_t200_neg", "sdi_t200_noneg"] and "ism_t500_dt20_noneg" in numbers
    assert all(v >= 0 and v == v for v in numbers.values())
    for t in (200, 500):
        for dt in (20, 200):
            assert numbers[f"ism_t{t}_dt{dt}_neg"] < 0.2 * numbers[f"sds_t{t}_neg"]
        # SDI's seeds differ only by the inversion's η noise (0.3): far less spread than SDS's fresh noise.
        assert 0 < numbers[f"sdi_t{t}_neg"] < 0.7 * numbers[f"sds_t{t}_neg"]


def test_sdi_rows_are_sdi_pseudo_gts_and_deterministic_without_eta(prior: MultiViewPrior) -> None:
    """The SDI row's tiles are ``sdi_guidance``'s ``pred_x0`` at the forced t for seeds 0..S-1; with η = 0 the
    inversion draws nothing, so every seed gives the same pseudo-GT and the row's inconsistency is exactly 0."""
    renders = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(2))
    settings = InspectSettings(timesteps=(300,), delta_ts=(20,), seeds=2, negatives=("noneg",))
    prompt = PromptConfig(text="a red chair", negative="")
    grid, numbers = inspect_pseudo_gt(prior, renders, torch.tensor([0.0]), prompt, settings=settings)
    assert list(numbers) == ["sds_t300_noneg", "sdi_t300_noneg", "ism_t300_dt20_noneg"]
    x0 = prior.encode_images(renders)
    expected = [prior.decode(sdi_guidance(prior, x0, torch.tensor([0.0]), encode_prompt_set(prior, prompt), 0,
                                          GuidanceConfig(), torch.Generator().manual_seed(seed), t=300,
                                          return_previews=True).previews["pred_x0"])[0] for seed in (0, 1)]
    tile = SIZE + 2
    for seed in (0, 1):
        shown = grid[tile : tile + SIZE, (1 + seed) * tile : (1 + seed) * tile + SIZE].float() / 255.0
        torch.testing.assert_close(shown, expected[seed].clamp(0, 1), atol=1 / 255, rtol=0)
    assert numbers["sdi_t300_noneg"] == pytest.approx(inconsistency(torch.stack(expected)[:, None]), abs=1e-6)
    _, still = inspect_pseudo_gt(prior, renders, torch.tensor([0.0]), prompt, config=GuidanceConfig(sdi_eta=0.0),
                                 settings=settings)
    assert still["sdi_t300_noneg"] == 0.0 and still["sds_t300_noneg"] > 0.01


def test_ism_pseudo_gt_of_a_dataset_image_at_small_t_is_that_image(prior: MultiViewPrior) -> None:
    image = prior.decode(prior.images[:1])  # the front view, as a render
    settings = InspectSettings(timesteps=(20,), delta_ts=(20,), seeds=2)
    grid, numbers = inspect_pseudo_gt(prior, image, torch.tensor([0.0]), PromptConfig(text="a red chair"),
                                      settings=settings)
    tile = SIZE + 2
    ism_row = 4  # rows: sds neg, sds noneg, sdi neg, sdi noneg, ism neg, ...
    pseudo_gt = grid[ism_row * tile : ism_row * tile + SIZE, tile : tile + SIZE].float() / 255.0
    assert float(psnr(pseudo_gt[None], image)) > 30.0
    assert numbers["ism_t20_dt20_neg"] < 0.01


def test_camera_conditioned_inspector_passes_the_cameras_to_the_prior(dataset: Path) -> None:
    """At large t the pseudo-GT follows the prior weights: with the camera conditioning training uses
    (``prior_control``) a random render at the side camera gets the side image; without it, a mix of views."""
    prior = load_multiview_prior(dataset, ModelConfig(multiview_resolution=SIZE, multiview_camera_sigma_deg=5.0))
    cameras = orbit_views(torch.tensor([90.0]), 10.0, 4.0, SIZE, 0.6)  # polar 80°: VIEWS[1]
    control = prior_control(prior, cameras)
    assert control is not None and control.shape == (1, 3)
    render = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    settings = InspectSettings(timesteps=(900,), delta_ts=(20,), seeds=1, negatives=("noneg",))
    side = prior.decode(prior.images[1:2])
    tile = SIZE + 2
    for given, conditioned in ((control, True), (None, False)):
        grid, _ = inspect_pseudo_gt(prior, render, torch.tensor([90.0]), PromptConfig(text="a red chair"),
                                    settings=settings, control=given)
        ism = grid[2 * tile : 2 * tile + SIZE, tile : tile + SIZE].float() / 255.0  # rows: sds, sdi, ism
        assert (float(psnr(ism[None], side)) > 30.0) == conditioned
    plain = load_multiview_prior(dataset, ModelConfig(multiview_resolution=SIZE))
    assert prior_control(plain, cameras) is None


def test_cli_inspect_prints_json_and_writes_png(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ply = tmp_path / "scene.ply"
    g = random_gaussians(30, 0, seed=1)
    g.means *= 0.3  # in front of the camera at radius 4
    g.log_scales[:] = -2.5
    write_gaussian_ply(ply, g)
    out = tmp_path / "out"
    code = main(["inspect", "--ply", str(ply), "--model", f"multiview:{dataset}", "--prompt", "a red chair",
                 "--t", "200", "--delta-t", "50", "--seeds", "2", "--azimuth", "0,90", "--size", "16",
                 "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["command"] == "inspect" and report["rows"] == [
        "sds_t200_neg", "sds_t200_noneg", "sdi_t200_neg", "sdi_t200_noneg", "ism_t200_dt50_neg", "ism_t200_dt50_noneg"]
    values = report["inconsistency"]
    assert set(values) == set(report["rows"]) and values["sdi_t200_neg"] > 0  # η = 0.3: seeds differ a little
    assert values["sdi_t200_neg"] < values["sds_t200_neg"]
    tile = ModelConfig().multiview_resolution + 2  # the CLI's prior runs at the default resolution
    # The PNG is labelled: a header of 3 lines (title, views, columns) and the rows' names on the left.
    png = iio.imread(out / "pseudo_gt.png")
    assert png.shape[0] == 6 * tile + 3 * LABEL_LINE_PX and png.shape[1] > 2 * 3 * tile
    assert report["png"] == str(out / "pseudo_gt.png")


def test_the_grid_is_labelled_with_method_t_delta_t_and_seed() -> None:
    assert row_label("ism_t200_dt20_neg") == "ISM t=200 dT=20 neg"
    assert row_label("sds_t500_noneg") == "SDS t=500 no neg"
    assert row_label("sdi_t300_neg") == "SDI t=300 neg"
    grid = np.full((2 * 34, 2 * 3 * 34, 3), 128, np.uint8)
    labelled = label_grid(grid, ["sds_t200_neg", "ism_t200_dt20_neg"], n_views=2, seeds=2, title="a red chair")
    header = 3 * LABEL_LINE_PX
    margin = labelled.shape[1] - grid.shape[1]
    assert labelled.shape[0] == grid.shape[0] + header and margin > 60
    assert np.array_equal(labelled[header:, margin:], grid)  # the grid itself is unchanged
    ink = labelled < 100
    assert ink[:header].any() and ink[header:, :margin].any()  # text in the header and the row labels
