"""The README's first command fits the machine (issue 27): with neither ``--model`` nor ``--preset``, ``generate`` runs
the offline demo on a machine without CUDA (and says so in one line, with how to run Stable Diffusion anyway) and
Stable Diffusion with CUDA; an explicit ``--model`` or ``--preset`` wins; a run estimated over ``--max-hours`` is
refused with its estimate unless ``--force``, before anything loads where a measured figure applies, else after its
first steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lucid_app.config import DEFAULT_MODEL, TrainConfig, replace
from lucid_app.config.presets import REPO_ROOT
from lucid_app.train import eta

TINY = ["render.width=16", "render.height=16", "model.multiview_resolution=16", "cameras.batch_size=2",
        "init.num_points=100", "export.turntable_frames=2", "export.turntable_size=16", "export.eval_views=1",
        "densify.enabled=false"]


def _main(args: list[str]) -> int:
    from lucid_app.cli.main import main

    return main(args)


def _generate(out: Path, *extra: str, settings: list[str] = TINY) -> list[str]:
    args = ["generate", "--out", str(out), *extra]
    for item in settings:
        args += ["--set", item]
    return args


def _last_json(capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    captured = capsys.readouterr()
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model ids ``generate`` loads (it loads them through ``lucid_app.priors.load_prior``)."""
    import lucid_app.priors as priors

    loaded: list[str] = []
    real = priors.load_prior

    def record(model_id: str, *args: object, **kwargs: object) -> object:
        loaded.append(model_id)
        return real(model_id, *args, **kwargs)

    monkeypatch.setattr(priors, "load_prior", record)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return loaded


# ------------------------------------------------------------------ the estimate, as numbers


def test_the_estimate_scales_the_measured_cpu_step_and_applies_to_stable_diffusion_on_a_cpu_only() -> None:
    paper = TrainConfig()
    assert eta.estimate_run_s(paper, "cpu") == pytest.approx(eta.SD_CPU_STEP_S * paper.optim.steps)
    small = replace(paper, render=replace(paper.render, width=256, height=128),
                    cameras=replace(paper.cameras, batch_size=2), optim=replace(paper.optim, steps=10))
    assert eta.estimate_run_s(small, "cpu") == pytest.approx(eta.SD_CPU_STEP_S * (256 * 128 / 512 ** 2) * 0.5 * 10)
    assert eta.estimate_run_s(paper, "cuda") is None
    demo = replace(paper, model=replace(paper.model, id="multiview:assets/demo"))
    assert eta.estimate_run_s(demo, "cpu") is None
    learned = replace(paper, model=replace(paper.model, id=str(REPO_ROOT / "assets" / "demo_prior")))
    assert eta.estimate_run_s(learned, "cpu") is None


def test_the_estimate_waits_for_weights_that_can_load(tmp_path: Path) -> None:
    from lucid_app.train.prepare import weights_available

    assert weights_available(str(tmp_path)) and not weights_available(str(tmp_path / "missing"))
    assert not weights_available("lucid-app-tests/not-cached")  # HF_HUB_OFFLINE=1 in the tests (conftest)


def test_over_limit_says_the_estimate_and_the_ways_out() -> None:
    assert eta.over_limit(7199.0, 100, 2.0, "x") is None
    text = eta.over_limit(2 * 86400.0, 1000, 2.0, "as its first steps took") or ""
    assert "~2 days" in text and "1000 steps at 3 min/step" in text and "--max-hours 2" in text
    assert "--force" in text and "--preset demo" in text
    assert eta.measured_step_s([30.0, 1.0, 3.0]) == 2.0 and eta.measured_step_s([4.0]) == 4.0


# ------------------------------------------------------------------ what the first command runs


def test_without_cuda_the_first_command_runs_the_demo_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, loads: list[str]
) -> None:
    code = _main(_generate(tmp_path / "run", "--prompt", "a red toy car", "--device", "cpu",
                           settings=[*TINY, "optim.steps=2"]))
    result, _ = _last_json(capsys)
    assert code == 0 and result["status"] == "done" and result["step"] == 2
    assert DEFAULT_MODEL not in loads, "Stable Diffusion must not even be tried without CUDA"
    assert result["model"].startswith("multiview:") and result["prompt"] == "a red toy car"
    notice = result["notice"]
    assert notice.startswith("No CUDA device") and "--preset paper --force" in notice
    assert "\n" not in notice and str(REPO_ROOT) not in notice, "one line, no server path"
    assert "optim.steps=2" in notice  # the user's settings apply on top of the demo preset
    assert notice in caplog.text


def test_a_prompt_the_demo_cannot_make_is_named_in_the_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loads: list[str]
) -> None:
    assert _main(_generate(tmp_path / "run", "--prompt", "a hamburger", "--device", "cpu",
                           settings=[*TINY, "optim.steps=1"])) == 0
    result, _ = _last_json(capsys)
    assert result["prompt"] == "a red toy car"
    assert "'a hamburger' is not one of its objects" in result["notice"]


def test_with_cuda_the_first_command_tries_stable_diffusion_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from lucid_app.priors import load_prior
    from lucid_app.priors.base import PriorError
    from lucid_app.train import prepare

    tried: list[str] = []

    def loader(model, device):  # noqa: ANN001, ANN202 - the cache's signature
        tried.append(model.id)
        if model.id == DEFAULT_MODEL:
            raise PriorError("not downloaded")
        return load_prior(model.id, model, "cpu")

    monkeypatch.setattr(prepare, "resolve_device", lambda device: torch.device("cuda"))
    config = prepare.resolve_config(prompt="a red toy car")
    prepared = prepare.load_run_prior(config, "cuda", loader=loader, machine_choice=True)
    assert tried[0] == DEFAULT_MODEL and prepared.notice.startswith("No Stable Diffusion weights")
    assert str(REPO_ROOT) not in prepared.notice and "multiview:assets/demo" in prepared.notice


def test_an_explicit_preset_wins_and_is_refused_before_loading_when_it_would_take_weeks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lucid_app.train import prepare

    # The weights are on this machine (without them the loader's message comes first, then the offline demo).
    monkeypatch.setattr(prepare, "weights_available", lambda model_id: True)
    code = _main(_generate(tmp_path / "run", "--prompt", "a red toy car", "--preset", "paper", "--device", "cpu",
                           settings=[]))
    err = capsys.readouterr().err
    assert code == 2 and loads == []
    assert "~24 days" in err and "5000 steps" in err and "--max-hours 2" in err and "--force" in err
    assert "Traceback" not in err


def test_a_run_over_max_hours_is_refused_after_its_first_steps_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, loads: list[str]
) -> None:
    from tests.helpers import write_object

    data = tmp_path / "chair"
    write_object(data, "a red chair", [(a, 80.0) for a in range(-180, 180, 60)], seed=0, size=16)
    base = ["--prompt", "a red chair", "--negative", "", "--model", f"multiview:{data}", "--device", "cpu"]
    settings = [*TINY, "optim.steps=8"]
    code = _main(_generate(tmp_path / "run", *base, "--max-hours", "1e-9", settings=settings))
    result, _ = _last_json(capsys)
    assert code == 2 and result["status"] == "refused" and result["step"] == eta.ETA_SAMPLE_STEPS
    assert "as its first steps took" in result["refusal"] and "--max-hours 1e-09" in result["refusal"]
    assert result["refusal"] in caplog.text and "--resume" in caplog.text
    assert Path(result["files"]["ply"]).is_file(), "what the run made is exported"
    code = _main(_generate(tmp_path / "forced", *base, "--max-hours", "1e-9", "--force", settings=settings))
    result, _ = _last_json(capsys)
    assert code == 0 and result["status"] == "done" and result["step"] == 8
