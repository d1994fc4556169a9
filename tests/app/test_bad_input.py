"""Bad input the second trust-boundary trial found mishandled (issue 24, docs/SECURITY.md "Bad input").

Each test failed on the code before the fix: a traceback where one line was due, a crash for lack of a bound, a value
silently accepted (or rounded), or a wrong message. The command line answers a user error with one line and exit
status 2; the app answers with one line naming the field, and its server log keeps one line per user error.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import pathlib
import pickle
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import tests.app_harness  # noqa: F401  (Gradio's environment before gradio is imported)
import gradio as gr  # noqa: E402

from lucid_app.cli.main import build_parser  # noqa: E402
from lucid_app.cli.main import main as cli_main  # noqa: E402
from lucid_app.config import PAPER_NEGATIVE, ConfigError, InitConfig, TrainConfig, apply_overrides  # noqa: E402
from lucid_app.config.presets import load_config  # noqa: E402
from lucid_app.io.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from lucid_app.io.ply import PlyError, read_gaussian_ply, read_point_cloud, write_gaussian_ply  # noqa: E402
from lucid_app.priors.base import PriorError  # noqa: E402
from lucid_app.ui.form import FORM_FIELDS, form_values  # noqa: E402
from lucid_app.ui.guidance_handlers import GuidanceHandlers  # noqa: E402
from lucid_app.ui.handlers import AppHandlers  # noqa: E402
from tests.app_harness import free_port  # noqa: E402
from tests.helpers import REQUEST, TINY, random_gaussians, write_object  # noqa: E402

# What torch.save raises when its zip writer finds the disk full (torch 2.x, measured on a full 256 KB tmpfs).
TORCH_DISK_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 534"


def one_line(text: str) -> str:
    """The single non-empty line of ``text`` (asserting there is exactly one)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def error_line(stderr: str) -> str:
    """The command line's one ``error:`` line on ``stderr`` (progress bars and log lines may come before it), with
    no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture()
def disk_fills_after_one_save(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``torch.save`` works once, then writes part of the file and fails as it does on a full disk."""
    real_save = torch.save
    calls: list[str] = []

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(str(f))
        if len(calls) == 1:
            real_save(obj, f, *args, **kwargs)
            return
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError(TORCH_DISK_FULL)

    monkeypatch.setattr(torch, "save", save)
    return calls


# ---------------------------------------------------------------------------------------------- CLI tracebacks


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path: Path, disk_fills_after_one_save) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": torch.tensor(1)})
    with pytest.raises(OSError) as info:
        save_checkpoint(path, {"step": torch.tensor(2)})
    assert info.value.errno == errno.ENOSPC and "the disk is full" in str(info.value)
    assert int(load_checkpoint(path)["step"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"], "the half-written file was left behind"


def test_generate_on_a_full_disk_is_one_line_and_keeps_the_checkpoint(
    tmp_path: Path, disk_fills_after_one_save, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "chair"
    write_object(dataset, "a red chair", [(a, 80.0) for a in range(-180, 180, 90)], seed=0, size=16)
    run = tmp_path / "run"
    args = ["generate", "--prompt", "a red chair", "--model", f"multiview:{dataset}", "--out", str(run)]
    for item in TINY:
        args += ["--set", item]
    assert cli_main(args) == 2
    message = error_line(capsys.readouterr().err)
    assert message.startswith("error: the disk is full") and "checkpoint.pt" in message
    # The first checkpoint (step 0) was written before the disk filled; it is still there and loads.
    assert len(disk_fills_after_one_save) >= 2 and int(load_checkpoint(run / "checkpoint.pt")["step"]) == 0


class _Plant:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_a_pickled_embedding_named_txt_is_one_line(tiny_sd_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from lucid_app.priors.sd_loading import apply_lora, apply_textual_inversion, load_pipeline

    marker = tmp_path / "PWNED"
    embedding = tmp_path / "embedding.txt"
    embedding.write_bytes(pickle.dumps(_Plant(marker), protocol=2))
    empty = tmp_path / "lora.safetensors"
    empty.write_bytes(b"")
    # The loader's own error path, whatever else checks the file first: a file that is not safetensors.
    pipe = load_pipeline(str(tiny_sd_dir), torch.float32, None)
    with pytest.raises(PriorError, match=r"textual-inversion embedding .*embedding.txt.*not a .safetensors file"):
        apply_textual_inversion(pipe, (str(embedding),))
    with pytest.raises(PriorError, match=r"LoRA .*lora.safetensors.*not a .safetensors file"):
        apply_lora(pipe, str(empty), 1.0)
    # The command line: one line, exit status 2, nothing unpickled.
    argv = ["generate", "--prompt", "a cat", "--model", str(tiny_sd_dir), "--set",
            f"model.textual_inversion=[{embedding}]", "--set", "optim.steps=1", "--out", str(tmp_path / "run")]
    assert cli_main(argv) == 2
    message = error_line(capsys.readouterr().err)
    assert message.startswith("error: ") and "embedding.txt" in message and "SafetensorError" not in message
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- bounds of every size


@pytest.mark.parametrize(("argv", "message"), [
    (["render", "--ply", "x.ply", "--out", "o", "--size", "100000"], "--size: must be <= 2048, got 100000"),
    (["render", "--ply", "x.ply", "--out", "o", "--frames", "1000000"], "--frames: must be <= 3600"),
    (["render", "--ply", "x.ply", "--out", "o", "--views", "100000"], "--views: must be <= 360"),
    (["render", "--ply", "x.ply", "--out", "o", "--rings", "1000"], "--rings: must be <= 4"),
    (["render", "--ply", "x.ply", "--out", "o", "--fps", "100000"], "--fps: must be <= 120"),
    (["render", "--ply", "x.ply", "--out", "o", "--fovy", "nan"], "--fovy: must be a finite number"),
    (["render", "--ply", "x.ply", "--out", "o", "--fovy", "4"], "--fovy: must be < 3.14159"),
    (["render", "--ply", "x.ply", "--out", "o", "--radius", "-1"], "--radius: must be > 0.0"),
    (["mesh", "--ply", "x.ply", "--out", "o.glb", "--resolution", "100000"], "--resolution: must be <= 512"),
    (["mesh", "--ply", "x.ply", "--out", "o.glb", "--faces", "10000000000"], "--faces: must be <= 100000000"),
    (["mesh", "--ply", "x.ply", "--out", "o.glb", "--iso", "inf"], "--iso: must be a finite number"),
    (["inspect", "--ply", "x", "--model", "m", "--prompt", "p", "--out", "o", "--delta-t", "-1"],
     "--delta-t: value 1 ('-1'): must be >= 1"),
    (["inspect", "--ply", "x", "--model", "m", "--prompt", "p", "--out", "o", "--azimuth", "0,nan"],
     "--azimuth: value 2 ('nan'): must be a finite number"),
    (["inspect", "--ply", "x", "--model", "m", "--prompt", "p", "--out", "o", "--size", "100000"],
     "--size: must be <= 1024"),
    (["inspect", "--ply", "x", "--model", "m", "--prompt", "p", "--out", "o", "--seeds", "100000"],
     "--seeds: must be <= 16"),
    (["inspect", "--ply", "x", "--model", "m", "--prompt", "p", "--out", "o", "--t", ",".join(["100"] * 100)],
     "--t: at most 16 values, got 100"),
    (["inspect", "--ply", "x", "--model", "m", "--prompt", "p", "--out", "o", "--elevation", "nan"],
     "--elevation: must be a finite number"),
    (["bench", "step", "--size", "100000"], "--size: must be <= 1024"),
    (["bench", "step", "--gaussians", "100000000000"], "--gaussians: must be <= 10000000"),
    (["bench", "step", "--views", "100000"], "--views: must be <= 64"),
    (["bench", "distill2d", "--model", "m", "--resolution", "100000"], "--resolution: must be <= 1024"),
    (["bench", "distill2d", "--model", "m", "--lr", "nan"], "--lr: must be a finite number"),
    (["bench", "quality", "--steps", "100000000"], "--steps: must be <= 20000"),
    (["train-prior", "--out", "o", "--steps", "1000000000"], "--steps: must be <= 1000000"),
    (["train-prior", "--out", "o", "--batch-size", "1000000"], "--batch-size: must be <= 4096"),
    (["train-prior", "--out", "o", "--minutes", "inf"], "--minutes: must be a finite number"),
    (["batch", "prompts.txt", "--out", "o", "--retries", "1000000"], "--retries: must be <= 100"),
])
def test_every_size_and_camera_flag_is_bounded(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert message in one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------- NaN in a .ply


@pytest.mark.parametrize(("field", "row", "column", "value"), [
    ("means", 3, 1, math.nan), ("log_scales", 5, 2, math.inf), ("opacity_logits", 7, None, -math.inf),
    ("sh_dc", 2, None, math.nan),
])
def test_a_ply_with_nan_is_refused_naming_file_and_field(tmp_path: Path, field: str, row: int, column: int | None,
                                                         value: float) -> None:
    gaussians = random_gaussians(20, 0)
    array = getattr(gaussians, field)
    if column is None:
        array.reshape(20, -1)[row, 0] = value
    else:
        array[row, column] = value
    path = write_gaussian_ply(tmp_path / "bad.ply", gaussians)
    names = {"means": "'y'", "log_scales": "'scale_2'", "opacity_logits": "'opacity'", "sh_dc": "'f_dc_0'"}
    with pytest.raises(PlyError, match=rf"bad\.ply: vertex property {names[field]} is NaN or infinite at 1 of 20 "
                                       rf"vertices \(first: vertex {row}"):
        read_gaussian_ply(path)


def test_a_ply_with_a_zero_rotation_or_nan_points_is_refused(tmp_path: Path) -> None:
    gaussians = random_gaussians(10, 0)
    gaussians.quats[4] = 0.0
    with pytest.raises(PlyError, match="rot_0..rot_3 are all zero at 1 of 10 vertices"):
        read_gaussian_ply(write_gaussian_ply(tmp_path / "zero.ply", gaussians))
    # A plain point cloud with a NaN coordinate (init.shape='ply' reads these).
    cloud = random_gaussians(10, 0)
    cloud.means[0, 2] = math.nan
    with pytest.raises(PlyError, match="vertex property 'z' is NaN"):
        read_point_cloud(write_gaussian_ply(tmp_path / "cloud.ply", cloud))


def test_render_of_a_nan_ply_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gaussians = random_gaussians(20, 0)
    gaussians.means[3, 1] = math.nan
    path = write_gaussian_ply(tmp_path / "nan.ply", gaussians)
    assert cli_main(["render", "--ply", str(path), "--out", str(tmp_path / "o"), "--frames", "2", "--size", "16",
                     "--views", "1"]) == 2
    assert "nan.ply: vertex property 'y' is NaN or infinite" in error_line(capsys.readouterr().err)


def test_the_inspector_refuses_a_nan_ply_before_queueing(tmp_path: Path) -> None:
    gaussians = random_gaussians(20, 0)
    gaussians.log_scales[0, 0] = math.nan
    path = write_gaussian_ply(tmp_path / "upload.ply", gaussians)
    handlers = GuidanceHandlers(AppHandlers(SimpleNamespace(outputs=tmp_path)))
    args = dict(run=None, ply_file=str(path), prompt="a red toy car", model="", camera="orbit", azimuth_deg=0.0,
                elevation_deg=0.0, radius=4.0, timesteps="200", delta_ts="20", seeds=2, variants="both", negative="",
                request=REQUEST)
    with pytest.raises(PlyError, match="vertex property 'scale_0' is NaN"):
        handlers.inspect_request("upload", **args)
    write_gaussian_ply(path, random_gaussians(20, 0))
    for name, value, message in (("azimuth_deg", math.nan, "azimuth: expected a finite number"),
                                 ("radius", -1.0, "radius: must be > 0.0"), ("seeds", 2.5, "seeds: expected a whole"),
                                 ("timesteps", "200," * 40, "t: at most 16 values"),
                                 ("delta_ts", "2000", "δ_T: values must be at most 999")):
        with pytest.raises(ConfigError, match=message):
            handlers.inspect_request("upload", **{**args, name: value})


# ---------------------------------------------------------------------------------------------- the schema


def test_overrides_and_init_paths_are_bounded_in_the_schema() -> None:
    with pytest.raises(ConfigError, match=r"^5000 overrides; at most 256 are allowed"):
        apply_overrides(TrainConfig(), ["seed=1"] * 5000)
    with pytest.raises(ConfigError, match=r"^init\.path: empty, but init\.shape='ply' reads its points from a file"):
        apply_overrides(TrainConfig(), ["init.shape=ply"])
    with pytest.raises(ConfigError, match="init.shape='mesh'"):
        InitConfig(shape="mesh", path="  ")
    assert apply_overrides(TrainConfig(), ["init.shape=ply", "init.path=x.ply"]).init.path == "x.ply"


# ---------------------------------------------------------------------------------------------- the app's API


class RecordingJobs:
    """A job manager that records submitted configs and runs nothing (a submit is what must not happen)."""

    def __init__(self, outputs: Path) -> None:
        self.outputs = outputs
        self.device = torch.device("cpu")
        self.submitted: list[TrainConfig] = []

    def submit(self, config: TrainConfig, session: str = "", allow_demo: bool = True) -> Any:
        self.submitted.append(config)
        raise ValueError(f"submitted with steps={config.optim.steps}")

    def latest(self, session: str) -> None:
        return None

    def cancel_session(self, session: str) -> int:
        return 0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The app on a free port over :class:`RecordingJobs`; yields (jobs, call) where ``call(**fields)`` sends
    ``/generate`` the demo form changed by ``fields`` as raw JSON (NaN included) and returns the event's error."""
    import httpx

    from lucid_app.ui.layout import APP_CSS, build_demo

    outputs = tmp_path_factory.mktemp("api-outputs")
    jobs = RecordingJobs(outputs)
    demo = build_demo(jobs)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        allowed_paths=[str(outputs)], css=APP_CSS, show_error=False)
    base = {**form_values(load_config("demo")), "prompt": "a red toy car", "negative": PAPER_NEGATIVE,
            "preset": "demo", "model": "", "export_mesh": True, "extra_overrides": ""}
    url = f"http://127.0.0.1:{port}/gradio_api/call/generate"

    def call(**fields: Any) -> Any:
        form = {**base, **fields}
        body = json.dumps({"data": [form[name] for name in FORM_FIELDS]})  # NaN and Infinity as JavaScript writes them
        event = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30).json()
        stream = httpx.get(f"{url}/{event['event_id']}", timeout=60).text
        assert "event: error" in stream, stream
        data = stream.split("event: error", 1)[1].split("data:", 1)[1].strip().splitlines()[0]
        return json.loads(data)["error"] if data != "null" else None

    try:
        yield jobs, call
    finally:
        demo.close()


@pytest.mark.parametrize(("fields", "message"), [
    ({"steps": 2.5}, "steps: expected a whole number, got 2.5"),
    ({"perp_neg": "yes"}, "perp_neg: expected true or false, got 'yes'"),
    ({"steps": math.nan}, "steps: expected a finite number, got nan"),
    ({"seed": math.inf}, "seed: expected a finite number, got inf"),
    ({"steps": -math.inf}, "steps: expected a finite number, got -inf"),
    ({"steps": "abc"}, "steps: expected a number, got 'abc'"),
    ({"delta_t": "abc"}, "delta_t: expected a number, got 'abc'"),
    ({"prompt": ["a", "list"]}, "prompt: expected text"),
    # Models are the server's names (app/model_registry.py): a long name is refused like any unknown one.
    ({"model": "x" * 5000}, "unknown model: pick one of this server's models"),
    ({"model": "y" * 300}, "unknown model: pick one of this server's models"),
    ({"init_shape": "ply"}, "init.path: empty, but init.shape='ply' reads its points from a file"),
    ({"extra_overrides": "seed=1\n" * 5000}, "extra_overrides: 5000 lines; at most 256 are allowed"),
    ({"extra_overrides": "x" * 200_000}, "extra_overrides: 200000 characters; at most 100000 are allowed"),
])
def test_the_api_refuses_bad_values_with_one_line_naming_the_field(api, fields: dict, message: str,
                                                                    caplog: pytest.LogCaptureFixture,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    jobs, call = api
    before = len(jobs.submitted)
    with caplog.at_level(logging.INFO, logger="lucid_app.ui.errors"):
        error = call(**fields)
    assert error is not None and message in error and "\n" not in error
    assert len(jobs.submitted) == before, "the bad value reached the job queue"
    # The server log: one line for the user error, no traceback (neither ours nor Gradio's on stderr).
    records = [r for r in caplog.records if r.name == "lucid_app.ui.errors"]
    assert len(records) == 1 and records[0].levelno == logging.INFO and records[0].exc_info is None
    assert "\n" not in records[0].getMessage()
    assert "Traceback" not in capfd.readouterr().err


def test_the_api_still_takes_good_values(api) -> None:
    jobs, call = api
    assert call(steps=42.0, seed=7, perp_neg=True) == "submitted with steps=42"
    assert jobs.submitted[-1].seed == 7 and jobs.submitted[-1].guidance.perp_neg is True


# ---------------------------------------------------------------------------------------------- the server log


def test_the_server_log_has_one_line_per_user_error_and_tracebacks_only_for_internal_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from lucid_app.ui.errors import user_errors

    @user_errors
    def refuses() -> None:
        raise ConfigError("seed: must be >= 0, got -1\n(a second line)")

    @user_errors
    def crashes() -> None:
        raise KeyError("a bug")

    with caplog.at_level(logging.DEBUG, logger="lucid_app.ui.errors"):
        with pytest.raises(gr.Error) as refused:
            refuses()
        with pytest.raises(gr.Error) as crashed:
            crashes()
    # Gradio prints the traceback of any gr.Error whose print_exception is set: ours never are.
    assert refused.value.print_exception is False and crashed.value.print_exception is False
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(info) == 1 and info[0].exc_info is None
    assert info[0].getMessage().endswith(".refuses: seed: must be >= 0, got -1 | (a second line)")
    assert len(errors) == 1 and errors[0].exc_info is not None and "internal error" in errors[0].getMessage()


# ---------------------------------------------------------------------------------------------- app.py


@pytest.mark.parametrize("failure", ["mkdir", "write"])
def test_a_read_only_outputs_folder_is_one_line_and_exit_2(
    failure: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import app

    outputs = tmp_path / "outputs"
    if failure == "mkdir":
        real_mkdir = Path.mkdir

        def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
            if self == outputs:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    else:
        outputs.mkdir()
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args: Any, dir: Any = None, **kwargs: Any) -> Any:  # noqa: A002 - tempfile's own name
            if dir is not None and Path(dir) == outputs:
                raise OSError(errno.EROFS, "Read-only file system", str(dir))
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    def no_server(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the app started on an outputs folder it cannot write")

    monkeypatch.setattr(app, "JobManager", no_server)
    with pytest.raises(SystemExit) as info:
        app.main(["--outputs", str(outputs)])
    assert info.value.code == 2
    message = one_line(capsys.readouterr().err)
    reason = "Permission denied" if failure == "mkdir" else "Read-only file system"
    assert message == f"error: --outputs {outputs}: cannot write there ({reason}); choose a folder you can write"


def test_app_flags_are_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    import app

    for argv, message in ((["--port", "70000"], "--port: must be <= 65535"),
                          (["--max-upload-mb", "nan"], "--max-upload-mb: must be a finite number"),
                          (["--max-models", "0"], "--max-models: must be >= 1")):
        with pytest.raises(SystemExit) as info:
            app.parse_args(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
