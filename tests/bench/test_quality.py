"""The quality benchmark: few-step runs on tiny generated datasets, its schedule, object selection, the camera band
read from the dataset, the supervised oracle and the CLI wiring."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lucid_app.bench import demo_dataset as dd
from lucid_app.bench.dataset import azimuth_arc, band_cameras, band_overrides, camera_band
from lucid_app.priors.multiview import select_object
from lucid_app.bench.quality import METHODS, eval_schedule, oracle_fraction, prepare_quality, quality
from lucid_app.cli.bench import add_quality_parser
from lucid_app.render.cameras import orbit_cameras
from lucid_app.config import ModelConfig
from lucid_app.guidance import GUIDANCES
from lucid_app.priors.multiview import load_multiview_prior
from lucid_app.render import make_renderer
from lucid_app.train.prepare import resolve_config
from tests.helpers import REPO

SIZE = 16
# Tiny, fast settings on top of the demo preset (its cameras and white background stay).
TINY = (
    f"model.multiview_resolution={SIZE}", f"render.width={SIZE}", f"render.height={SIZE}", "cameras.batch_size=2",
    "init.num_points=200", "guidance.warmup_steps=4", "densify.start_step=2", "densify.stop_step=4",
    "densify.every=2", "densify.opacity_reset_every=3", "densify.opacity_reset_until=4",
)
FIELDS = {"method", "steps", "seed", "prompt", "psnr_by_step", "ssim_by_step", "final_psnr", "final_ssim",
          "n_gaussians", "wall_s", "s_per_step", "psnr_init", "model", "camera_band"}
# A dataset off the demo's band: nearer, wider, lower (the demo's is radius 4, fovy 0.6, polar 60-100).
FAR_RADIUS, FAR_FOVY_RAD, FAR_POLAR_DEG, FAR_SIZE = 2.6, 0.7, (50.0, 85.0), 32
FAR = (f"model.multiview_resolution={FAR_SIZE}", f"render.width={FAR_SIZE}", f"render.height={FAR_SIZE}",
       "init.num_points=500", "densify.max_gaussians=1500")
DEMO_BAND = ("cameras.radius_range=[4.0,4.0]", "cameras.max_radius_range=[4.0,4.0]",
             "cameras.fovy_range_rad=[0.6,0.6]", "cameras.max_fovy_range_rad=[0.6,0.6]",
             "cameras.polar_range_deg=[60.0,100.0]", "cameras.max_polar_range_deg=[60.0,100.0]")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two demo objects (car, flower) at 16 px with 6 train and 3 test views each."""
    root = tmp_path_factory.mktemp("demo")
    dd.build_demo_dataset(root, make_renderer("torch", "cpu"), size_px=SIZE, train_views=6, test_views=3,
                          num_points=300, seed=0, objects=[dd.toy_car(), dd.potted_flower()])
    return str(root)


def write_posed_object(folder: Path, obj: dd.DemoObject, radius: float, fovy_rad: float,
                       polar_range_deg: tuple[float, float], size_px: int, train_views: int, test_views: int) -> None:
    """One object folder rendered at ``radius`` / ``fovy_rad`` (the demo builder's pieces, another band)."""
    renderer = make_renderer("torch", "cpu")
    splats = dd.object_splats(obj, 1500, torch.Generator().manual_seed(0))
    views = {"train": dd.grid_views(train_views, polar_range_deg),
             "test": dd.random_views(test_views, torch.Generator().manual_seed(0), polar_range_deg)}
    for split, (azimuth, polar) in views.items():
        n = azimuth.shape[0]
        cameras = orbit_cameras(azimuth, polar, torch.full((n,), radius), torch.full((n,), fovy_rad), size_px, size_px)
        for i, image in enumerate(dd.render_rgba(renderer, splats, cameras)):
            dd.write_rgba_png(folder / split / f"r_{i}.png", image)
        meta = dd.transforms_dict(split, dd.opengl_c2w_from_viewmats(cameras.viewmats), fovy_rad)
        (folder / f"transforms_{split}.json").write_text(json.dumps(meta))
    (folder / "caption.txt").write_text(obj.caption + "\n")


@pytest.fixture(scope="module")
def far_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The car at radius 3.0, fovy 0.8 rad, polar 50-85°: 32 px, 24 train and 4 test views."""
    root = tmp_path_factory.mktemp("far")
    write_posed_object(root / "toy_car", dd.toy_car(), FAR_RADIUS, FAR_FOVY_RAD, FAR_POLAR_DEG, FAR_SIZE, 24, 4)
    return str(root)


def test_eval_schedule_defaults_and_requested_steps() -> None:
    assert eval_schedule(1000) == [250, 500, 1000]
    assert eval_schedule(2500) == [250, 500, 1000, 2000, 2500]
    assert eval_schedule(100) == [100]
    assert eval_schedule(6, [4, 2, 2, 9]) == [2, 4, 6]
    with pytest.raises(ValueError):
        eval_schedule(0)


def test_run_reports_json_fields_at_the_requested_steps(dataset: str) -> None:
    result = quality(dataset, "a red toy car", "ism", steps=6, seed=0, eval_steps=[2, 4], overrides=TINY)
    decoded = json.loads(json.dumps(result))
    assert FIELDS <= set(decoded)
    assert decoded["method"] == "ism" and decoded["steps"] == 6 and decoded["prompt"] == "a red toy car"
    assert [s for s, _ in decoded["psnr_by_step"]] == [2, 4, 6]
    assert [s for s, _ in decoded["ssim_by_step"]] == [2, 4, 6]
    assert all(math.isfinite(v) and v > 0 for _, v in decoded["psnr_by_step"])
    assert all(-1.0 <= v <= 1.0 for _, v in decoded["ssim_by_step"])
    assert decoded["final_psnr"] == decoded["psnr_by_step"][-1][1]
    assert decoded["n_gaussians"] > 0 and decoded["s_per_step"] > 0


def test_equal_seeds_give_identical_results_and_default_prompt_is_first_caption(dataset: str) -> None:
    steps: list[int] = []
    runs = [quality(dataset, None, "sds", steps=5, seed=3, eval_steps=[3], overrides=TINY,
                    on_step=lambda event: steps.append(event.step)) for _ in range(2)]
    assert steps == [1, 2, 3, 4, 5] * 2
    first, second = ({k: v for k, v in run.items() if k not in ("wall_s", "s_per_step")} for run in runs)
    assert first == second
    assert first["prompt"] == "a potted flower"  # object folders load sorted by name: potted_flower, toy_car
    other = quality(dataset, None, "sds", steps=5, seed=4, eval_steps=[3], overrides=TINY)
    assert other["psnr_by_step"] != first["psnr_by_step"]


def test_select_object_needs_exactly_one_object_with_test_views(dataset: str) -> None:
    prior = load_multiview_prior(dataset, ModelConfig(multiview_resolution=SIZE))
    assert select_object(prior, "a potted flower").caption == "a potted flower"
    with pytest.raises(ValueError, match="selects 2 objects"):
        select_object(prior, "")


def test_unknown_method_is_a_value_error(dataset: str) -> None:
    with pytest.raises(ValueError, match="valid"):
        quality(dataset, None, "vsd", steps=2)  # type: ignore[arg-type]


def test_cli_wiring_parses_options_and_runs(dataset: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_quality_parser(parser.add_subparsers(dest="bench", required=True))
    argv = ["quality", "--dataset", dataset, "--prompt", "a potted flower", "--method", "sds", "--steps", "4",
            "--seed", "1", "--eval-steps", "2,3", "--device", "cpu"]
    for item in TINY:
        argv += ["--set", item]
    args = parser.parse_args(argv)
    assert args.eval_steps == [2, 3] and args.set == list(TINY)
    result = args.func(args)
    assert result["prompt"] == "a potted flower" and result["seed"] == 1 and result["method"] == "sds"
    assert [s for s, _ in result["psnr_by_step"]] == [2, 3, 4]
    assert "quality sds" in capsys.readouterr().err  # the progress bar goes to stderr
    with pytest.raises(SystemExit):
        parser.parse_args(["quality", "--eval-steps", "0,x"])


# ------------------------------------------------------------------------------------------- the camera band

# Faster learning and densification than the demo's for the 100-step runs below (the oracle reaches ~25 dB).
FAST = ("optim.means_lr=0.005", "optim.means_lr_final=0.0005", "optim.colors_lr=0.02", "optim.colors_lr_final=0.01",
        "densify.start_step=20", "densify.stop_step=60", "densify.every=20", "densify.opacity_reset_every=1000")


def cameras_at(azimuth_deg: list[float], polar_deg: list[float], radius: list[float], fovy_rad: float):
    n = len(azimuth_deg)
    return orbit_cameras(torch.tensor(azimuth_deg), torch.tensor(polar_deg), torch.tensor(radius),
                         torch.full((n,), fovy_rad), 8, 8)


def test_camera_band_reads_ranges_from_the_cameras() -> None:
    azimuth = [float(a) for a in range(-180, 180, 30)]
    cameras = cameras_at(azimuth, [50.0 + 2.5 * i for i in range(12)], [2.5 + 0.05 * i for i in range(12)], 0.8)
    band = camera_band(cameras)
    assert band["cameras.radius_range"] == band["cameras.max_radius_range"] == pytest.approx([2.5, 3.05], abs=1e-4)
    assert band["cameras.fovy_range_rad"] == band["cameras.max_fovy_range_rad"] == pytest.approx([0.8, 0.8])
    assert band["cameras.polar_range_deg"] == band["cameras.max_polar_range_deg"] == pytest.approx([50.0, 77.5])
    assert band["cameras.azimuth_range_deg"] == band["cameras.max_azimuth_range_deg"] == [-180.0, 180.0]
    assert band["cameras.default_radius"] == pytest.approx(2.775) and band["cameras.default_fovy_rad"] == 0.8
    assert band["cameras.jitter"] is False
    config = resolve_config("demo", overrides=band_overrides(band))
    assert config.cameras.radius_range == pytest.approx((2.5, 3.05), abs=1e-4) and not config.cameras.jitter
    assert config.cameras.polar_range_deg == pytest.approx((50.0, 77.5))


def test_azimuth_arc_is_the_circle_minus_its_widest_gap() -> None:
    assert azimuth_arc(torch.tensor([-30.0, 0.0, 30.0])) == pytest.approx((-30.0, 30.0))
    # Across the back: 150..180 and -180..-150 is one arc from 150 to 210.
    assert azimuth_arc(torch.tensor([150.0, 170.0, -170.0, -150.0])) == pytest.approx((150.0, 210.0))
    assert azimuth_arc(torch.tensor([10.0])) == pytest.approx((10.0, 10.0))
    assert azimuth_arc(torch.arange(-180.0, 180.0, 40.0)) == (-180.0, 180.0)
    lo, hi = azimuth_arc(torch.tensor([170.0, -60.0, 100.0]))  # widest gap -60 → 100: the arc 100 → 300
    assert (lo, hi) == pytest.approx((100.0, 300.0))


def test_band_cameras_derive_fovy_from_the_aspect_of_non_square_images(tmp_path: Path) -> None:
    fovx = 0.9
    c2w = dd.opengl_c2w_from_viewmats(cameras_at([0.0, 90.0], [80.0, 80.0], [2.0, 2.0], 0.5).viewmats)
    (tmp_path / "transforms_train.json").write_text(json.dumps(dd.transforms_dict("train", c2w, fovx)))
    for i in range(2):
        dd.write_rgba_png(tmp_path / "train" / f"r_{i}.png", np.zeros((20, 40, 4), dtype=np.uint8))
    band = camera_band(band_cameras(tmp_path))
    fovy = 2.0 * math.atan(20 / 40 * math.tan(fovx / 2))
    assert band["cameras.fovy_range_rad"] == pytest.approx([fovy, fovy], abs=1e-4)
    assert band["cameras.radius_range"] == pytest.approx([2.0, 2.0], abs=1e-4)
    assert band["cameras.azimuth_range_deg"] == pytest.approx([0.0, 90.0], abs=1e-3)


# ------------------------------------------------------------------------------------ the oracle and the band


def test_oracle_fraction_arithmetic() -> None:
    assert oracle_fraction(20.0, 10.0, 30.0) == pytest.approx(0.5)
    assert oracle_fraction(30.0, 10.0, 30.0) == pytest.approx(1.0)
    assert oracle_fraction(8.0, 10.0, 30.0) == pytest.approx(-0.1)
    assert oracle_fraction(20.0, 10.0, 10.0) is None  # the ceiling did not move: undefined
    assert oracle_fraction(float("inf"), 10.0, 30.0) is None


def test_oracle_on_a_non_demo_band_scores_well_and_ignores_the_band(far_dataset: str) -> None:
    result = quality(far_dataset, None, "oracle", steps=100, seed=0, eval_steps=[], overrides=(*FAR, *FAST))
    band = result["camera_band"]
    assert band["cameras.radius_range"] == pytest.approx([FAR_RADIUS, FAR_RADIUS], abs=1e-3)
    assert band["cameras.fovy_range_rad"] == pytest.approx([FAR_FOVY_RAD, FAR_FOVY_RAD], abs=1e-3)
    assert FAR_POLAR_DEG[0] < band["cameras.polar_range_deg"][0] < band["cameras.polar_range_deg"][1] < FAR_POLAR_DEG[1]
    # Measured: 9.8 dB at the start, 25.4 dB after 100 steps.
    assert result["final_psnr"] > 20.0 and result["final_psnr"] > result["psnr_init"] + 8.0
    # The oracle trains at the dataset's own cameras: the sampling band does not reach it.
    short = [quality(far_dataset, None, "oracle", steps=6, seed=0, eval_steps=[], overrides=(*FAR, *FAST, *extra))
             for extra in ((), DEMO_BAND)]
    assert short[0]["final_psnr"] == short[1]["final_psnr"]


def test_a_guidance_scores_worse_with_the_demo_band_forced(far_dataset: str) -> None:
    """The band comes from the dataset: forcing the demo's (radius 4, fovy 0.6) through --set costs dB."""
    own, demo = (quality(far_dataset, None, "sds", steps=100, seed=0, eval_steps=[], overrides=(*FAR, *FAST, *extra))
                 for extra in ((), DEMO_BAND))
    assert demo["camera_band"] == own["camera_band"]  # the band is reported; the user's --set won over it
    # Measured: 16.0 dB with the dataset's band, 10.2 dB with the demo's (9.8 at the start).
    assert own["final_psnr"] > demo["final_psnr"] + 3.0


def test_with_oracle_reports_the_ceiling_and_the_fraction(dataset: str) -> None:
    result = quality(dataset, "a red toy car", "sds", steps=4, seed=2, eval_steps=[2], overrides=TINY,
                     with_oracle=True)
    oracle = quality(dataset, "a red toy car", "oracle", steps=4, seed=2, eval_steps=[2], overrides=TINY)
    assert result["oracle_psnr"] == oracle["final_psnr"] and result["oracle_ssim"] == oracle["final_ssim"]
    assert oracle["psnr_init"] == result["psnr_init"]  # the same initial Gaussians
    assert result["oracle_fraction"] == oracle_fraction(result["final_psnr"], result["psnr_init"],
                                                        oracle["final_psnr"])
    assert json.loads(json.dumps(result)) == result


def test_a_non_multiview_model_takes_object_and_views_from_the_dataset(dataset: str, tiny_sd_dir: Path) -> None:
    """Tiny random SD (meaningless images, real plumbing): the prompt selects the dataset's object, whose test views
    score the run; the initial Gaussians score as under the multi-view prior."""
    other = quality(dataset, "a potted flower", "sds", steps=2, seed=0, eval_steps=[], overrides=TINY,
                    model=str(tiny_sd_dir))
    own = quality(dataset, "a potted flower", "sds", steps=2, seed=0, eval_steps=[], overrides=TINY)
    assert other["model"] == str(Path(tiny_sd_dir).resolve()) and own["model"].startswith("multiview:")
    assert other["prompt"] == "a potted flower" and other["psnr_init"] == own["psnr_init"]
    assert math.isfinite(other["final_psnr"]) and other["camera_band"] == own["camera_band"]
    with pytest.raises(ValueError, match="selects 2 objects"):
        quality(dataset, "a", "sds", steps=1, overrides=TINY, model=str(tiny_sd_dir))


def test_methods_are_the_guidances_and_the_oracle() -> None:
    assert set(METHODS) == {*GUIDANCES, "oracle"}
    parser = argparse.ArgumentParser()
    add_quality_parser(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(["quality", "--method", "oracle", "--model", "multiview:x", "--with-oracle"])
    assert args.method == "oracle" and args.model == "multiview:x" and args.with_oracle
    assert parser.parse_args(["quality"]).model is None


def _matrix_script():  # noqa: ANN202
    import importlib.util

    spec = importlib.util.spec_from_file_location("quality_matrix", REPO / "bench" / "quality_matrix.py")
    matrix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(matrix)
    return matrix


def test_matrix_resume_keeps_an_earlier_runs_finished_cells(tmp_path: Path) -> None:
    """``--resume``: the finished cells of an earlier run's stdout are read back; failed ones are run again."""
    earlier = tmp_path / "first.out"
    done = {"prompt": "car", "method": "sds", "seed": 0, "psnr_by_step": [[10, 20.0]]}
    earlier.write_text("\n".join(["progress noise", "cell " + json.dumps(done),
                                  "cell " + json.dumps({"prompt": "car", "method": "ism", "seed": 0, "error": "x"}),
                                  json.dumps({"summary": []})]) + "\n")
    assert _matrix_script().read_cells(earlier) == [done]


def test_matrix_summary_puts_the_oracle_of_the_same_seeds_beside_each_method() -> None:
    matrix = _matrix_script()

    def cell(method: str, seed: int, init: float, psnrs: list[list[float]]) -> dict:
        return {"prompt": "car", "method": method, "seed": seed, "psnr_init": init, "psnr_by_step": psnrs,
                "ssim_by_step": [[s, 0.5] for s, _ in psnrs], "s_per_step": 0.1, "n_gaussians": 10}

    cells = [cell("ism", 0, 10.0, [[5, 15.0], [10, 20.0]]), cell("ism", 1, 12.0, [[5, 15.0], [10, 22.0]]),
             cell("oracle", 0, 10.0, [[5, 20.0], [10, 30.0]]), cell("oracle", 1, 12.0, [[5, 20.0], [10, 32.0]]),
             cell("oracle", 2, 11.0, [[5, 20.0], [10, 99.0]]), cell("sds", 3, 10.0, [[10, 15.0]]),
             {"prompt": "car", "method": "sds", "seed": 4, "error": "boom"}]
    out = matrix.summarise(cells)
    assert out["cells"] == 7 and out["failed"] == 1
    rows = {entry["method"]: entry for entry in out["summary"]}
    ism = rows["ism"]
    assert ism["psnr_init_mean"] == 11.0 and ism["oracle_psnr"] == 31.0  # seeds 0 and 1 only, not seed 2
    assert ism["oracle_fraction"] == round(oracle_fraction(21.0, 11.0, 31.0), 3) == 0.5
    assert ism["by_step"][0]["oracle_psnr_mean"] == 20.0 and ism["by_step"][0]["oracle_fraction"] == 0.444
    assert rows["oracle"]["oracle_fraction"] == 1.0
    assert rows["sds"]["oracle_psnr"] is None and rows["sds"]["oracle_fraction"] is None  # no oracle for seed 3


def test_prior_evaluations_are_counted_per_step(dataset: str) -> None:
    sds = quality(dataset, "a red toy car", "sds", steps=3, seed=0, eval_steps=[3], overrides=TINY)
    assert sds["prior_evals_per_view"] == 2.0  # one guided call: negative and positive branch of each view
    ism = quality(dataset, "a red toy car", "ism", steps=3, seed=0, eval_steps=[3], overrides=TINY)
    assert ism["prior_evals_per_view"] >= 3.0  # at least one inversion step, the step s → t, and the guided call
    views = sds["prior_samples_per_step"] / 2.0
    assert ism["prior_samples_per_step"] == pytest.approx(ism["prior_evals_per_view"] * views, abs=0.05)
    # The doctor beside the figures: r, and where descent settles (offset = pull / r, None where r <= 0).
    for result in (sds, ism):
        doctor = result["doctor"]
        assert set(doctor["restoring"]) == set(doctor["pull"]) == set(doctor["offset"]) == {"300", "450"}
        for t, r in doctor["restoring"].items():
            expected = doctor["pull"][t] / r if r > 0 else None
            assert doctor["offset"][t] == (None if expected is None else pytest.approx(expected, rel=1e-4))


def test_a_preset_is_trained_under_the_camera_band_and_the_overrides(dataset: str, tmp_path: Path) -> None:
    """``--preset``: its settings reach the run; the dataset's band and ``--set`` still win over it."""
    preset = tmp_path / "fast.yaml"
    preset.write_text("base: demo\nguidance:\n  guidance_scale: 3.0\ncameras:\n  radius_range: [9.0, 9.0]\n"
                      "densify:\n  max_gaussians: 123\n")
    setup = prepare_quality(dataset, "a red toy car", "sds", steps=4, overrides=(*TINY, "densify.max_gaussians=77"),
                            preset=str(preset))
    assert setup.config.guidance.guidance_scale == 3.0 and setup.config.densify.max_gaussians == 77
    assert list(setup.config.cameras.radius_range) == setup.band["cameras.radius_range"]
    result = quality(dataset, "a red toy car", "sds", steps=2, seed=0, eval_steps=[], overrides=TINY,
                     preset=str(preset))
    assert result["preset"] == str(preset)
