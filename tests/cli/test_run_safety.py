"""No data loss and no crashes in the CLI: run folders are never replaced without ``--overwrite``, outputs are checked
before any work, ``--set`` survives the offline-demo fallback, Ctrl-C / SIGTERM export and exit non-zero, kills
leave a checkpoint, runs resume from any working folder, and errors are our own one-line messages."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lucid_app.train import prepare as runs
from lucid_app.cli.main import main
from lucid_app.config import DEFAULT_MODEL, from_yaml
from lucid_app.io.checkpoints import load_checkpoint
from lucid_app.priors import load_prior
from lucid_app.train.prepare import load_run_prior, resolve_config
from lucid_app.train.trainer import Trainer
from tests.helpers import REPO, TINY, last_json



def generate_args(model: Path | str, out: Path, *extra: str) -> list[str]:
    args = ["generate", "--prompt", "a red chair", "--negative", "", "--model", f"multiview:{model}", "--out", str(out)]
    for item in [*TINY, *extra]:
        args += ["--set", item]
    return args


def run_prior(run_dir: Path) -> object:
    """The prior of a run folder's config (to resume it in-process)."""
    config = from_yaml((run_dir / "config.yaml").read_text())
    return load_prior(config.model.id, config.model)


def status_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "status" in r]


# ------------------------------------------------------------------ run folders and outputs


def test_generate_refuses_to_replace_a_run_and_overwrite_starts_clean(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    run = tmp_path / "run"
    assert main(generate_args(dataset, run)) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    assert main(generate_args(dataset, run, "seed=1")) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before, "the run was touched"

    (run / "notes.txt").write_text("mine")
    (run / "views" / "view_009.png").write_bytes(b"old view of a bigger ring")
    assert main([*generate_args(dataset, run, "seed=1", "optim.steps=2"), "--overwrite"]) == 0
    assert last_json(capsys)["step"] == 2
    assert (run / "notes.txt").read_text() == "mine", "a user's file was removed"
    assert not (run / "views" / "view_009.png").exists(), "a stale output of the old run was kept"
    assert status_records(run) == [{"step": 2, "status": "done", "message": ""}], "metrics of two runs mixed"
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2


def test_generate_into_a_non_empty_folder_needs_overwrite(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"jpg")
    assert main(generate_args(dataset, out)) == 2
    assert "is not empty" in capsys.readouterr().err and not (out / "config.yaml").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(generate_args(dataset, empty, "optim.steps=1")) == 0


def test_outputs_are_checked_before_any_work(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(runs, "load_run_prior", no_loading)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    ply = tmp_path / "missing.ply"  # never read: the output check comes first
    cases = [
        (generate_args(dataset, a_file), "is a file, not a folder"),
        (generate_args(dataset, a_file / "run"), "is a file, not a folder"),
        (["render", "--ply", str(ply), "--out", str(a_file)], "is a file, not a folder"),
        (["mesh", "--ply", str(ply), "--out", str(a_file / "mesh.glb")], "is a file, not a folder"),
        (["mesh", "--ply", str(ply), "--out", str(tmp_path)], "is a folder"),
        (["mesh", "--ply", str(ply), "--out", str(tmp_path / "mesh.stl")], "mesh format must be one of"),
        (["inspect", "--ply", str(ply), "--model", f"multiview:{dataset}", "--prompt", "a", "--out", str(a_file)],
         "is a file, not a folder"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_overwrite_does_not_go_with_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--resume", str(tmp_path), "--overwrite"]) == 2
    assert "--overwrite" in capsys.readouterr().err


# ------------------------------------------------------------------ the offline demo keeps the user's settings


def test_demo_fallback_applies_the_users_overrides_and_names_the_dropped_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = ["optim.steps=3", "seed=7", "guidance.method=sds", "model.multiview_resolution=16"]
    config = resolve_config(prompt="a potted flower", overrides=overrides)
    assert config.model.id == DEFAULT_MODEL
    prepared = load_run_prior(config, "cpu", overrides=overrides)
    demo = resolve_config("demo")
    assert prepared.config.model.id == demo.model.id
    assert prepared.config.model.multiview_resolution == demo.model.multiview_resolution, "model.* must not apply"
    assert (prepared.config.optim.steps, prepared.config.seed, prepared.config.guidance.method) == (3, 7, "sds")
    assert prepared.config.prompt.text == "a potted flower"
    assert prepared.config.densify == demo.densify, "the demo preset's other settings apply"
    notice = prepared.notice or ""
    assert "optim.steps=3" in notice and "seed=7" in notice and "guidance.method=sds" in notice
    assert "dropped" in notice and "model.multiview_resolution=16" in notice
    # Without overrides (the app's call today) nothing changes but the seed.
    plain = load_run_prior(resolve_config(prompt="a potted flower", overrides=["seed=5"]), "cpu")
    assert plain.config.optim.steps == demo.optim.steps and plain.config.seed == 5


def test_generate_on_the_demo_fallback_runs_the_steps_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["generate", "--prompt", "a red toy car", "--out", str(tmp_path / "run")]
    for item in ["optim.steps=2", "render.width=16", "render.height=16", "init.num_points=100",
                 "export.turntable_frames=2", "export.turntable_size=16", "export.eval_views=1"]:
        args += ["--set", item]
    assert main(args) == 0
    result = last_json(capsys)
    assert result["step"] == 2 and result["steps"] == 2 and "optim.steps=2" in result["notice"]


# ------------------------------------------------------------------ Ctrl-C, SIGTERM and kills


def test_ctrl_c_stops_after_the_step_exports_and_exits_130(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    real_step = Trainer.train_step

    def step_then_ctrl_c(self: Trainer, *args: object, **kwargs: object) -> object:
        event = real_step(self, *args, **kwargs)
        if event.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return event

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    previous = signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    assert main(generate_args(dataset, run, "optim.steps=50", "export.checkpoint_every=0")) == 130
    assert signal.getsignal(signal.SIGINT) is previous, "the SIGINT handler was not restored"
    result = last_json(capsys)
    assert result["status"] == "stopped" and result["signal"] == "SIGINT" and result["step"] == 2
    assert Path(result["files"]["ply"]).is_file() and Path(result["files"]["video"]).is_file()
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2, "the last good state was checkpointed"
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert Trainer.resume(run, run_prior(run)).step == 2


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def start_generate(dataset: Path, run: Path, *extra: str) -> subprocess.Popen[str]:
    args = generate_args(dataset, run, "optim.steps=20000", "export.checkpoint_every=0", *extra)
    return subprocess.Popen([sys.executable, "-m", "lucid_app", *args], cwd=run.parent, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen[str], run: Path, step: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and any(json.loads(line).get("step", 0) >= step
                                     for line in metrics.read_text().splitlines() if line.strip()):
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no step {step} within {timeout_s} s")


def test_sigterm_exports_the_last_good_state_and_exits_143(dataset: Path, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    proc = start_generate(dataset, run, "export.log_every=1")
    wait_for_step(proc, run, 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "stopped" and result["signal"] == "SIGTERM" and "Traceback" not in err
    assert (run / "model.ply").is_file() and (run / "turntable.mp4").is_file()
    assert load_checkpoint(run / "checkpoint.pt")["step"] == result["step"] >= 3


def test_a_kill_leaves_a_recent_checkpoint_to_resume(dataset: Path, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    proc = start_generate(dataset, run, "export.log_every=1", "export.checkpoint_every_s=0.2")
    wait_for_step(proc, run, 1)
    time.sleep(1.0)  # five checkpoint intervals
    wait_for_step(proc, run, 8)
    proc.kill()
    proc.communicate(timeout=60)
    step = load_checkpoint(run / "checkpoint.pt")["step"]
    assert step >= 1, "a time-based checkpoint was written"
    trainer = Trainer.resume(run, run_prior(run))
    assert trainer.step == step and trainer.train_step().step == step + 1


# ------------------------------------------------------------------ resume from anywhere


def test_resume_works_from_another_working_folder(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "chair").symlink_to(dataset, target_is_directory=True)
    monkeypatch.chdir(first)
    assert main(generate_args(Path("chair"), Path("run"), "optim.steps=2")) == 0
    capsys.readouterr()
    assert f"id: multiview:{first / 'chair'}" in (first / "run" / "config.yaml").read_text()
    monkeypatch.chdir(second)
    assert main(["generate", "--resume", str(first / "run")]) == 0
    assert last_json(capsys)["step"] == 2


def test_the_demo_presets_model_is_stored_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for cwd in (REPO, tmp_path):
        monkeypatch.chdir(cwd)
        model_id = resolve_config("demo").model.id
        assert model_id == f"multiview:{REPO / 'assets' / 'demo'}", cwd
    assert runs.resolve_model_id(DEFAULT_MODEL) == DEFAULT_MODEL


# ------------------------------------------------------------------ our own messages


class RunsCode:
    """A pickled object that would run code on load."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("kind", "message"),
    [("garbage", "is damaged"), ("truncated", "is damaged"), ("empty", "is damaged"),
     ("code", "not written by lucid-app"), ("tensor", "not a lucid-app checkpoint")],
)
def test_a_bad_checkpoint_is_our_one_line_message(
    kind: str, message: str, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    run = tmp_path / "run"
    assert main(generate_args(dataset, run, "optim.steps=1")) == 0
    capsys.readouterr()
    good = (run / "checkpoint.pt").read_bytes()
    buffer = io.BytesIO()
    torch.save({"step": RunsCode()} if kind == "code" else torch.ones(3), buffer)
    data = {"garbage": b"hello, not a checkpoint", "truncated": good[: len(good) // 2], "empty": b"",
            "code": buffer.getvalue(), "tensor": buffer.getvalue()}[kind]
    (run / "checkpoint.pt").write_bytes(data)
    assert main(["generate", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and "checkpoint.pt" in err, err
    for library_text in ("Traceback", "weights_only", "Weights only", "file an issue", "miniz", "pwned"):
        assert library_text not in err, (library_text, err)
    assert len(err.strip().splitlines()) == 1


def test_a_checkpoint_of_another_run_is_a_clear_error(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    run = tmp_path / "run"
    assert main(generate_args(dataset, run, "optim.steps=1")) == 0
    torch.save({"step": 1}, run / "checkpoint.pt")
    capsys.readouterr()
    assert main(["generate", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "does not hold a state of this run" in err and "Traceback" not in err


def test_a_hub_model_that_is_not_cached_is_our_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["generate", "--prompt", "a", "--model", "lucid-app-tests/no-such-model",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "not in the local Hugging Face cache" in err and "sd2-community" in err
    for library_text in ("local_files_only", "stacktrace", "Traceback"):
        assert library_text not in err, (library_text, err)
