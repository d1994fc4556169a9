"""The quality benchmark: a few-step run on a tiny generated demo dataset, its schedule, object selection and
the CLI wiring."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from lucid_app import demo_dataset as dd
from lucid_app.bench_quality import add_quality_parser, eval_schedule, quality, select_object
from lucid_app.config import ModelConfig
from lucid_app.priors.multiview import load_multiview_prior
from lucid_app.render import make_renderer

SIZE = 16
# Tiny, fast settings on top of the demo preset (its cameras and white background stay).
TINY = (
    f"model.multiview_resolution={SIZE}", f"render.width={SIZE}", f"render.height={SIZE}", "cameras.batch_size=2",
    "init.num_points=200", "guidance.warmup_steps=4", "densify.start_step=2", "densify.stop_step=4",
    "densify.every=2", "densify.opacity_reset_every=3", "densify.opacity_reset_until=4",
)
FIELDS = {"method", "steps", "seed", "prompt", "psnr_by_step", "ssim_by_step", "final_psnr", "final_ssim",
          "n_gaussians", "wall_s", "s_per_step"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two demo objects (car, flower) at 16 px with 6 train and 3 test views each."""
    root = tmp_path_factory.mktemp("demo")
    dd.build_demo_dataset(root, make_renderer("torch", "cpu"), size_px=SIZE, train_views=6, test_views=3,
                          num_points=300, seed=0, objects=[dd.toy_car(), dd.potted_flower()])
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
