"""The Avatar tab without a browser: the pose preview on the server's (synthetic, converted) SMPL folder, its
messages, and the avatar job's overrides through a fake job manager. The SMPL folder is server configuration: no
endpoint takes one from a client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import inspect
from pathlib import Path

import numpy as np
import pytest

import tests.app_harness  # noqa: F401  (Gradio's environment before gradio is imported)

from lucid_app.config import replace  # noqa: E402
from lucid_app.train.prepare import resolve_config  # noqa: E402
from tests.helpers import FakeJobs, REQUEST, job_view  # noqa: E402

if TYPE_CHECKING:  # annotations only: their modules load in the tests that use them
    from lucid_app.ui.avatar_tab import AvatarHandlers


@pytest.fixture(scope="module")
def smpl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import converted_smpl_dir

    return converted_smpl_dir(tmp_path_factory.mktemp("smpl ui: #1"))  # a path YAML would misread unquoted


def avatar_handlers(tmp_path: Path, smpl_dir: Path | str = "", script: list = ()) -> tuple[AvatarHandlers, FakeJobs]:
    from lucid_app.ui.avatar_tab import AvatarHandlers
    from lucid_app.ui.handlers import AppHandlers

    jobs = FakeJobs(tmp_path, list(script))
    return AvatarHandlers(AppHandlers(jobs, stream_interval_s=0.0, smpl_dir=str(smpl_dir))), jobs


def test_pose_preview_is_the_front_part_map(smpl_dir: Path, tmp_path: Path) -> None:
    from lucid_app.ui.avatar_tab import PREVIEW_SIZE_PX

    pytest.importorskip("smplx")
    handlers, _ = avatar_handlers(tmp_path, smpl_dir)
    image, message = handlers.preview("neutral", "t_pose")
    assert message == "" and isinstance(image, np.ndarray)
    assert image.shape == (PREVIEW_SIZE_PX, PREVIEW_SIZE_PX, 3) and image.dtype == np.uint8
    assert (image[0, 0] == 0).all(), "black background"
    assert (image.sum(axis=-1) > 0).mean() > 0.02, "the body covers part of the view"
    other, _ = handlers.preview("neutral", "walking")
    assert not np.array_equal(image, other), "the preview follows the pose"


def test_pose_preview_explains_what_is_wrong_without_server_paths(smpl_dir: Path, tmp_path: Path) -> None:
    from lucid_app.ui.avatar_tab import MODEL_FAILED, NO_SMPL_MODEL

    handlers, _ = avatar_handlers(tmp_path)
    assert handlers.preview("neutral", "a_pose") == (None, NO_SMPL_MODEL)
    assert "--" not in NO_SMPL_MODEL, "no command-line flags in what web users read"
    handlers, _ = avatar_handlers(tmp_path, smpl_dir)
    image, message = handlers.preview("neutral", "no_such_pose")
    assert image is None and message.startswith("Unknown pose: pick one of") and "a_pose" in message
    image, message = handlers.preview("female", "a_pose")
    assert image is None and message == "this server has SMPL models for: neutral"
    image, message = handlers.preview("../../etc", "a_pose")
    assert image is None and "not an SMPL gender" in message
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "SMPL_NEUTRAL.npz").write_bytes(b"not a zip")
    handlers, _ = avatar_handlers(tmp_path, broken)
    assert handlers.preview("neutral", "a_pose") == (None, MODEL_FAILED)


def test_the_endpoints_take_no_smpl_folder(smpl_dir: Path, tmp_path: Path) -> None:
    from lucid_app.ui.avatar_tab import AVATAR_FIELDS, AvatarHandlers, NO_SMPL_MODEL, NO_SMPL_NOTICE

    params = list(inspect.signature(AvatarHandlers.generate).parameters)
    assert params[1:-1] == list(AVATAR_FIELDS) and params[-1] == "request" and "smpl_dir" not in params
    from lucid_app.ui.layout import build_demo

    demo = build_demo(FakeJobs(tmp_path), smpl_dir=str(smpl_dir))
    endpoints = demo.get_api_info()["named_endpoints"]
    assert [p["parameter_name"] for p in endpoints["/avatar_preview"]["parameters"]] == ["gender", "pose"]
    assert [p["parameter_name"] for p in endpoints["/generate_avatar"]["parameters"]] == list(AVATAR_FIELDS)
    components = demo.config["components"]
    assert not any(comp["props"].get("elem_id") == "lucid-smpl-dir" for comp in components)
    notice = next(comp for comp in components if comp["props"].get("elem_id") == "lucid-smpl-notice")
    assert notice["props"]["value"] == "SMPL models on this server: neutral."
    without = build_demo(FakeJobs(tmp_path)).config["components"]
    notice = next(comp for comp in without if comp["props"].get("elem_id") == "lucid-smpl-notice")
    # Without SMPL files: one notice, with the command that adds them, and no form.
    assert notice["props"]["value"] == NO_SMPL_NOTICE and "python -m lucid_app smpl-convert" in NO_SMPL_NOTICE
    assert not any(NO_SMPL_MODEL in str(comp["props"].get("value")) for comp in without)
    form = next(comp for comp in without if comp["props"].get("elem_id") == "lucid-avatar-form")
    assert form["props"]["visible"] is False


def test_avatar_job_is_submitted_with_the_servers_smpl_folder(smpl_dir: Path, tmp_path: Path) -> None:
    from lucid_app.ui.avatar_tab import AVATAR_PRESET, avatar_overrides
    from lucid_app.ui.handlers import GENERATE_OUTPUTS

    handlers, jobs = avatar_handlers(tmp_path, smpl_dir, [job_view("queued", version=1, position=0),
                                                          job_view("done", version=2, outcome="done")])
    outputs = list(handlers.generate("neutral", "walking", "a knight in armour", "blurry", 1.25, 12, 7,
                                     request=REQUEST))
    # Queued, then the end in two updates (the mesh viewer's file before the splat viewer's).
    assert len(outputs) == 3 and all(len(out) == len(GENERATE_OUTPUTS) for out in outputs)
    (kind, config, session), = jobs.calls
    assert kind == "submit" and session == handlers.app.owner_of(REQUEST)
    assert config.avatar.enabled and config.avatar.smpl_dir == str(smpl_dir) and config.avatar.pose == "walking"
    assert config.avatar.gender == "neutral"
    assert config.model.controlnet_scale == 1.25 and config.model.controlnet
    assert (config.optim.steps, config.seed, config.prompt.text, config.prompt.negative) == (
        12, 7, "a knight in armour", "blurry")
    expected = resolve_config(AVATAR_PRESET, "a knight in armour", "blurry", None, [
        *avatar_overrides("walking", "neutral", 1.25), "optim.steps=12", "seed=7", "export.mesh=true",
    ])
    assert config == replace(expected, avatar=replace(expected.avatar, smpl_dir=str(smpl_dir)))


def test_avatar_job_without_a_server_model_is_refused_before_submitting(smpl_dir: Path, tmp_path: Path) -> None:
    import gradio as gr

    handlers, jobs = avatar_handlers(tmp_path)
    with pytest.raises(gr.Error, match="no SMPL body model"):
        list(handlers.generate("neutral", "a_pose", "a knight", "", 0.8, 10, 0, request=REQUEST))
    handlers, jobs = avatar_handlers(tmp_path, smpl_dir)
    with pytest.raises(gr.Error, match="SMPL models for: neutral"):
        list(handlers.generate("male", "a_pose", "a knight", "", 0.8, 10, 0, request=REQUEST))
    assert jobs.calls == []


@pytest.mark.parametrize("line", ['avatar.smpl_dir="/tmp/evil"', "avatar={enabled: true, smpl_dir: /tmp/evil}"])
def test_a_client_cannot_name_an_smpl_folder_through_the_overrides(smpl_dir: Path, tmp_path: Path,
                                                                   line: str) -> None:
    import gradio as gr
    from lucid_app.ui.handlers import AppHandlers

    handlers = AppHandlers(FakeJobs(tmp_path), stream_interval_s=0.0, smpl_dir=str(smpl_dir))
    with pytest.raises(gr.Error, match="avatar.smpl_dir"):
        handlers.resolve_form({"prompt": "a knight", "extra_overrides": line})


def test_the_page_has_the_avatar_tab_and_its_endpoints(tmp_path: Path) -> None:
    from lucid_app.ui.layout import build_demo

    demo = build_demo(FakeJobs(tmp_path))
    names = {dep.get("api_name") for dep in demo.config["dependencies"]}
    assert {"generate", "stop", "generate_avatar", "avatar_preview"} <= names


def test_app_takes_the_smpl_folder_from_its_flag_or_environment(
    smpl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys  # noqa: ANN001
) -> None:
    from app import SMPL_DIR_ENV, parse_args

    monkeypatch.chdir(smpl_dir.parent)
    assert parse_args(["--smpl-dir", smpl_dir.name]).smpl_dir == str(smpl_dir.resolve())
    monkeypatch.setenv(SMPL_DIR_ENV, str(smpl_dir))
    assert parse_args([]).smpl_dir == str(smpl_dir.resolve())
    monkeypatch.delenv(SMPL_DIR_ENV)
    assert parse_args([]).smpl_dir == ""
    # A folder with only the download's pickle: the app does not start, and says how to convert it.
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(SystemExit) as stop:
        parse_args(["--smpl-dir", str(tmp_path)])
    assert stop.value.code == 2 and "python -m lucid_app smpl-convert" in capsys.readouterr().err
