"""Avatar mode on a synthetic SMPL model (real topology sizes, random-but-plausible content, written in a fixture and
never committed): loading, pose presets, world frame, part maps with occlusion, and ControlNet-guided training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("smplx")

from lucid_app.render.cameras import orbit_cameras  # noqa: E402
from lucid_app.config import InitConfig, OptimConfig  # noqa: E402
from tests.helpers import converted_smpl_dir  # noqa: E402


@pytest.fixture(scope="module")
def smpl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted_smpl_dir(tmp_path_factory.mktemp("smpl"))


# Left upper arm pointing forward, forearm across the chest (in front of the torso).
ARM_ACROSS = {"body_pose": {"left_shoulder": [0.0, -1.57, 0.0], "left_elbow": [0.0, -1.57, 0.0],
                            "right_shoulder": [0.0, 0.0, 1.2]}}


def front_and_back(size: int) -> object:
    return orbit_cameras(torch.tensor([0.0, 180.0]), torch.tensor([90.0, 90.0]), torch.tensor([3.5, 3.5]),
                         torch.tensor([0.55, 0.55]), size, size)


def test_missing_smpl_folder_or_file_gives_the_clear_message(tmp_path: Path) -> None:
    from lucid_app.avatar.body import AvatarError, build_body

    with pytest.raises(AvatarError, match=r"smpl\.is\.tue\.mpg\.de.*") as err:
        build_body(tmp_path / "nowhere", "a_pose")
    assert "does not exist" in str(err.value) and "SMPL_NEUTRAL.npz" in str(err.value)
    assert "python -m lucid_app smpl-convert" in str(err.value)
    with pytest.raises(AvatarError, match="No SMPL_FEMALE.npz"):
        build_body(tmp_path, "a_pose", gender="female")


def test_every_pose_preset_loads_and_the_body_is_in_our_world_frame(smpl_dir: Path) -> None:
    from lucid_app.avatar.body import SMPL_NUM_JOINTS, SMPL_NUM_VERTICES, build_body, pose_names

    assert {"t_pose", "a_pose", "standing_relaxed", "walking", "waving", "sitting"} <= set(pose_names())
    for name in pose_names():
        body = build_body(smpl_dir, name)
        assert body.vertices.shape == (SMPL_NUM_VERTICES, 3) and body.joints.shape == (SMPL_NUM_JOINTS, 3)
        assert torch.isfinite(body.vertices).all() and body.faces.dtype == torch.int64
        centre = 0.5 * (body.vertices.min(0).values + body.vertices.max(0).values)
        assert centre.abs().max() < 1e-5, name
    t = build_body(smpl_dir, "t_pose")
    assert float(t.vertices[:, 2].max() - t.vertices[:, 2].min()) == pytest.approx(1.8, rel=1e-4)
    # z up: the head is above the pelvis; front +y: the feet point forward; the body's left is on world -x.
    assert t.joints[15, 2] > t.joints[0, 2] and t.joints[10, 1] > t.joints[7, 1]
    assert t.joints[20, 0] < 0 < t.joints[21, 0]


def test_poses_move_the_joints_as_named(smpl_dir: Path) -> None:
    from lucid_app.avatar.body import build_body

    t, a = build_body(smpl_dir, "t_pose"), build_body(smpl_dir, "a_pose")
    wave, sit = build_body(smpl_dir, "waving"), build_body(smpl_dir, "sitting")
    assert a.joints[20, 2] < a.joints[16, 2] - 0.1 and a.joints[21, 2] < a.joints[17, 2] - 0.1
    assert abs(float(t.joints[20, 2] - t.joints[16, 2])) < 1e-4
    assert wave.joints[21, 2] > wave.joints[17, 2] + 0.2, "the waving right wrist is above the shoulder"
    assert wave.joints[20, 2] < wave.joints[16, 2]
    # Sitting: the knees come forward (+y) to about hip height.
    assert sit.joints[4, 1] > sit.joints[1, 1] + 0.3 and abs(float(sit.joints[4, 2] - sit.joints[1, 2])) < 0.1


def test_custom_pose_files_and_bad_poses(tmp_path: Path) -> None:
    from lucid_app.avatar.body import AvatarError, load_pose

    (tmp_path / "p.json").write_text(json.dumps(ARM_ACROSS))
    pose = load_pose(str(tmp_path / "p.json"))
    assert pose.body_pose.shape == (23, 3) and pose.body_pose[15, 1] == pytest.approx(-1.57)
    np.savez(tmp_path / "p.npz", body_pose=pose.body_pose.numpy().reshape(-1), global_orient=np.zeros(3),
             betas=np.ones(4))
    loaded = load_pose(str(tmp_path / "p.npz"))
    assert torch.equal(loaded.body_pose, pose.body_pose) and loaded.betas.tolist() == [1.0] * 4 + [0.0] * 6
    with pytest.raises(AvatarError, match="neither a preset"):
        load_pose("moonwalk")
    (tmp_path / "bad.json").write_text(json.dumps({"body_pose": {"tail": [0, 0, 0]}}))
    with pytest.raises(AvatarError, match="unknown joint 'tail'"):
        load_pose(str(tmp_path / "bad.json"))


def test_surface_gaussians_are_on_the_body_and_seeded(smpl_dir: Path) -> None:
    from lucid_app.avatar.body import build_body
    from lucid_app.avatar.init import avatar_gaussians, sample_surface

    body = build_body(smpl_dir, "a_pose")
    init = InitConfig(num_points=500)
    g1 = avatar_gaussians(body, init, OptimConfig(), torch.Generator().manual_seed(3))
    g2 = avatar_gaussians(body, init, OptimConfig(), torch.Generator().manual_seed(3))
    assert g1.count == 500 and torch.equal(g1.means, g2.means)
    lo, hi = body.vertices.min(0).values, body.vertices.max(0).values
    assert ((g1.means >= lo - 1e-5) & (g1.means <= hi + 1e-5)).all()
    assert torch.allclose(g1.opacities, torch.full((500,), 0.1), atol=1e-5)
    points = sample_surface(body.vertices, body.faces, 2000, torch.Generator().manual_seed(0))
    nearest = torch.cdist(points, body.vertices).min(dim=1).values
    assert float(nearest.max()) < 0.1


def test_part_map_front_view_torso_centre_black_background(smpl_dir: Path) -> None:
    from lucid_app.avatar.body import build_body
    from lucid_app.avatar.partmap import part_labels, part_map

    body = build_body(smpl_dir, "a_pose")
    cams = front_and_back(64)
    labels = part_labels(body, cams)
    assert labels.shape == (2, 64, 64)
    assert int(labels[0, 32, 32]) == 2 and int(labels[1, 32, 32]) == 1, "torso front / torso back"
    assert (labels[:, 0, :] == 0).all() and (labels[:, :, 0] == 0).all()
    image = part_map(body, cams)
    assert image.shape == (2, 64, 64, 3) and image.min() >= 0 and image.max() <= 1
    assert (image[:, 0, 0] == 0).all() and image[0, 32, 32].sum() > 0
    assert len(set(labels.unique().tolist()) - {0}) >= 12


def test_part_map_occlusion_arm_in_front_of_the_torso(smpl_dir: Path, tmp_path: Path) -> None:
    from lucid_app.avatar.body import build_body
    from lucid_app.avatar.partmap import TORSO_PARTS, part_labels, project

    (tmp_path / "arm.json").write_text(json.dumps(ARM_ACROSS))
    body = build_body(smpl_dir, str(tmp_path / "arm.json"))
    cams = front_and_back(128)
    forearm_mid = 0.5 * (body.joints[18] + body.joints[20])
    assert forearm_mid[1] > body.joints[3, 1] + 0.1, "the forearm is in front of the chest"
    pixels, _ = project(forearm_mid[None], cams)
    labels = part_labels(body, cams)
    (c0, r0), (c1, r1) = pixels[0, 0].long().tolist(), pixels[1, 0].long().tolist()
    assert int(labels[0, r0, c0]) in (19, 21), "the front view sees the left lower arm"
    assert int(labels[1, r1, c1]) in TORSO_PARTS, "the back view sees the torso hiding it"


def test_controlnet_guided_avatar_training(smpl_dir: Path, tiny_sd_dir: Path, tiny_controlnet_dir: Path) -> None:
    from lucid_app.avatar.body import build_body
    from lucid_app.avatar.init import avatar_gaussians

    from lucid_app.avatar.partmap import control_fn_for
    from lucid_app.priors import load_prior
    from lucid_app.train.trainer import Trainer
    from tests.helpers import tiny_config

    config = tiny_config(str(tiny_sd_dir), steps=2, extra=(
        f"model.controlnet={tiny_controlnet_dir}", "model.controlnet_scale=1.0", "init.num_points=300",
        "densify.start_step=100", "densify.stop_step=200", "guidance.method=ism",
    ))
    prior = load_prior(config.model.id, config.model)
    body = build_body(smpl_dir, "a_pose")
    control = control_fn_for(body)
    seen: list[torch.Tensor] = []

    def control_fn(cams):  # noqa: ANN001, ANN202
        image = control(cams)
        seen.append(image)
        return image

    generator = torch.Generator().manual_seed(0)
    gaussians = avatar_gaussians(body, config.init, config.optim, generator)
    before = gaussians.means.detach().clone()
    trainer = Trainer(config, prior, control_fn=control_fn, gaussians=gaussians)
    for _ in range(2):
        event = trainer.train_step()
        assert np.isfinite(event.losses["total"]) and event.grad_norm > 0 and not event.skipped
    assert len(seen) == 2 and seen[0].shape == (2, 16, 16, 3) and seen[0].sum() > 0
    assert not torch.equal(before, trainer.gaussians.means.detach())
    for net in (prior.unet, prior.controlnet, prior.vae):
        assert all(p.grad is None for p in net.parameters())

    # The control residuals change ε: the same query with and without the part map differs.
    x_t = torch.randn(2, *prior.encode_images(torch.zeros(2, 16, 16, 3)).shape[1:],
                      generator=torch.Generator().manual_seed(1))
    cond = prior.encode_prompts(["a cat", "a cat"])
    t = torch.tensor([500, 500])
    plain = prior.predict_noise(x_t, t, cond)
    controlled = prior.predict_noise(x_t, t, cond, control=seen[0])
    assert (controlled - plain).abs().max() > 1e-4


def test_cli_avatar_without_smpl_files_exits_with_the_message(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from lucid_app.cli.main import main

    code = main(["generate", "--avatar", "--smpl-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "smpl.is.tue.mpg.de" in err and "Traceback" not in err


def test_avatar_preset_loads_with_a_controlnet() -> None:
    from lucid_app.config.presets import load_config

    config = load_config("avatar")
    assert config.model.controlnet and "stable-diffusion-v1-5" in config.model.id


def _avatar_config(smpl_dir: Path, tiny_sd_dir: Path, tiny_controlnet_dir: Path, steps: int) -> object:
    from tests.helpers import tiny_config

    return tiny_config(str(tiny_sd_dir), steps=steps, extra=(
        f"model.controlnet={tiny_controlnet_dir}", "init.num_points=300", "densify.enabled=false",
        "export.checkpoint_every=100", "avatar.enabled=true", f"avatar.smpl_dir={smpl_dir}", "avatar.pose=t_pose",
    ))


def test_avatar_run_resumes_from_its_config_alone(
    smpl_dir: Path, tiny_sd_dir: Path, tiny_controlnet_dir: Path, tmp_path: Path
) -> None:
    from lucid_app.avatar.body import build_body

    from lucid_app.config import from_yaml
    from lucid_app.train.controls import LiveControls
    from lucid_app.train.events import StepEvent
    from lucid_app.priors import load_prior
    from lucid_app.train.trainer import Trainer, initial_controls

    config = _avatar_config(smpl_dir, tiny_sd_dir, tiny_controlnet_dir, steps=4)
    prior = load_prior(config.model.id, config.model)
    controls = LiveControls(initial_controls(config))

    def stop_at_2(event: object) -> None:
        if isinstance(event, StepEvent) and event.step == 2:
            controls.stop()

    first = Trainer(config, prior, run_dir=tmp_path / "run", controls=controls)
    assert first.control_fn is not None and first.gaussians.count == 300, "the avatar came from the config"
    body = build_body(smpl_dir, "t_pose")
    # The Gaussians start on the posed body (within the initial scales of its surface).
    distance = torch.cdist(first.gaussians.means.detach(), body.vertices).min(dim=1).values
    assert float(distance.max()) < 0.1
    assert first.run(stop_at_2).status == "stopped"
    assert from_yaml((tmp_path / "run" / "config.yaml").read_text()).avatar == config.avatar

    resumed = Trainer.resume(tmp_path / "run", prior)
    assert resumed.step == 2 and resumed.control_fn is not None
    control = resumed.control_fn
    calls: list[torch.Tensor] = []

    def counting(cams):  # noqa: ANN001, ANN202
        image = control(cams)
        calls.append(image)
        return image

    resumed.control_fn = counting
    done = resumed.run()
    assert done.status == "done" and done.step == 4
    assert len(calls) == 2 and all(image.shape == (2, 16, 16, 3) and image.sum() > 0 for image in calls)


def test_cli_avatar_flags_are_recorded_in_the_run_config(
    smpl_dir: Path, tiny_sd_dir: Path, tiny_controlnet_dir: Path, tmp_path: Path
) -> None:
    from lucid_app.cli.main import main
    from lucid_app.config import AvatarConfig, from_yaml, replace, to_yaml

    config = _avatar_config(smpl_dir, tiny_sd_dir, tiny_controlnet_dir, steps=1)
    preset = tmp_path / "tiny_avatar.yaml"
    preset.write_text(to_yaml(replace(config, avatar=AvatarConfig())))
    args = ["generate", "--avatar", "--smpl-dir", str(smpl_dir), "--pose", "t_pose", "--preset", str(preset),
            "--out", str(tmp_path / "run")]
    assert main(args) == 0
    saved = from_yaml((tmp_path / "run" / "config.yaml").read_text())
    assert saved.avatar.enabled and saved.avatar.pose == "t_pose" and saved.avatar.smpl_dir == str(smpl_dir)


def test_cli_avatar_without_smpl_dir_names_the_flag(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from lucid_app.cli.main import main

    assert main(["generate", "--avatar", "--out", str(tmp_path / "run")]) == 2
    assert "avatar.smpl_dir" in capsys.readouterr().err


def test_job_manager_runs_an_avatar_job_from_its_config(
    smpl_dir: Path, tiny_sd_dir: Path, tiny_controlnet_dir: Path, tmp_path: Path
) -> None:
    from lucid_app.avatar.body import build_body

    from dataclasses import replace

    from lucid_app.config import from_yaml
    from lucid_app.app.jobs import JobManager
    from lucid_app.io.ply import read_gaussian_ply

    config = _avatar_config(smpl_dir, tiny_sd_dir, tiny_controlnet_dir, steps=2)
    jobs = JobManager(tmp_path / "out", "cpu").start()
    try:
        good = jobs.submit(config, session="s")
        missing = jobs.submit(replace(config, avatar=replace(config.avatar, smpl_dir=str(tmp_path / "none"))),
                              session="s")
        for job_id in (good.id, missing.id):
            view = jobs.view(job_id)
            while not view.finished:
                view = jobs.wait(job_id, view.version, 60.0)
        good, missing = jobs.view(good.id), jobs.view(missing.id)
    finally:
        jobs.close()
    assert good.state == "done" and good.outcome == "done", good.message
    assert from_yaml((good.run_dir / "config.yaml").read_text()).avatar == config.avatar
    # The Gaussians started on the t-posed body (the job path built the avatar from the config alone).
    means = torch.from_numpy(read_gaussian_ply(good.files["ply"]).means).float()
    body = build_body(smpl_dir, "t_pose")
    assert len(means) == 300 and float(torch.cdist(means, body.vertices).min(dim=1).values.max()) < 0.1
    assert missing.state == "failed" and "does not exist" in missing.message and "Traceback" not in missing.message
