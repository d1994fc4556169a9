"""The Avatar tab without a browser: the pose preview on a synthetic SMPL folder, its messages, and the avatar job's
overrides through a fake job manager."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest

import tests.app_harness  # noqa: F401  (Gradio's environment before gradio is imported)
import gradio as gr  # noqa: E402

from lucid_app.runs import resolve_config  # noqa: E402
from lucid_app.ui.avatar_tab import (  # noqa: E402
    AVATAR_FIELDS,
    AVATAR_PRESET,
    NO_SMPL_DIR,
    PREVIEW_SIZE_PX,
    AvatarHandlers,
    avatar_overrides,
    pose_preview,
)
from lucid_app.ui.handlers import GENERATE_OUTPUTS, AppHandlers  # noqa: E402
from tests.test_ui import REQUEST, FakeJobs, _view  # noqa: E402


@pytest.fixture(scope="module")
def smpl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smpl ui: #1")  # a path YAML would misread unquoted
    from tests.test_avatar import synthetic_smpl

    with open(root / "SMPL_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(synthetic_smpl(), fh)
    return root


def test_pose_preview_is_the_front_part_map(smpl_dir: Path) -> None:
    pytest.importorskip("smplx")
    image, message = pose_preview(str(smpl_dir), "t_pose")
    assert message == "" and isinstance(image, np.ndarray)
    assert image.shape == (PREVIEW_SIZE_PX, PREVIEW_SIZE_PX, 3) and image.dtype == np.uint8
    assert (image[0, 0] == 0).all(), "black background"
    assert (image.sum(axis=-1) > 0).mean() > 0.02, "the body covers part of the view"
    other, _ = pose_preview(str(smpl_dir), "walking")
    assert not np.array_equal(image, other), "the preview follows the pose"


def test_pose_preview_explains_what_is_wrong(smpl_dir: Path, tmp_path: Path) -> None:
    assert pose_preview("", "a_pose") == (None, NO_SMPL_DIR)
    image, message = pose_preview(str(tmp_path / "missing"), "a_pose")
    assert image is None and "does not exist" in message and "smpl.is.tue.mpg.de" in message
    image, message = pose_preview(str(smpl_dir), "no_such_pose")
    assert image is None and "no_such_pose" in message


def test_generate_signature_matches_the_tab_fields() -> None:
    params = list(inspect.signature(AvatarHandlers.generate).parameters)
    assert params[1:-1] == list(AVATAR_FIELDS) and params[-1] == "request"


def test_avatar_job_is_submitted_with_the_avatar_overrides(smpl_dir: Path, tmp_path: Path) -> None:
    jobs = FakeJobs(tmp_path, [_view("queued", version=1, position=0), _view("done", version=2, outcome="done")])
    handlers = AvatarHandlers(AppHandlers(jobs, stream_interval_s=0.0))
    outputs = list(handlers.generate(str(smpl_dir), "walking", "a knight in armour", "blurry", 1.25, 12, 7,
                                     request=REQUEST))
    assert len(outputs) == 2 and all(len(out) == len(GENERATE_OUTPUTS) for out in outputs)
    (kind, config, session), = jobs.calls
    assert kind == "submit" and session == "sess-a"
    assert config.avatar.enabled and config.avatar.smpl_dir == str(smpl_dir) and config.avatar.pose == "walking"
    assert config.model.controlnet_scale == 1.25 and config.model.controlnet
    assert (config.optim.steps, config.seed, config.prompt.text, config.prompt.negative) == (
        12, 7, "a knight in armour", "blurry")
    expected = resolve_config(AVATAR_PRESET, "a knight in armour", "blurry", None, [
        *avatar_overrides(str(smpl_dir), "walking", 1.25), "optim.steps=12", "seed=7", "export.mesh=true",
    ])
    assert config == expected


def test_avatar_job_without_smpl_files_is_refused_before_submitting(tmp_path: Path) -> None:
    jobs = FakeJobs(tmp_path)
    handlers = AvatarHandlers(AppHandlers(jobs, stream_interval_s=0.0))
    with pytest.raises(gr.Error, match="does not exist"):
        list(handlers.generate(str(tmp_path / "missing"), "a_pose", "a knight", "", 0.8, 10, 0, request=REQUEST))
    with pytest.raises(gr.Error, match="avatar.smpl_dir"):
        list(handlers.generate("", "a_pose", "a knight", "", 0.8, 10, 0, request=REQUEST))
    assert jobs.calls == []


def test_the_page_has_the_avatar_tab_and_its_endpoints(tmp_path: Path) -> None:
    from lucid_app.ui.layout import build_demo

    demo = build_demo(FakeJobs(tmp_path))
    names = {dep.get("api_name") for dep in demo.config["dependencies"]}
    assert {"generate", "stop", "generate_avatar", "avatar_preview"} <= names
