"""Avatar mode: a posed SMPL body (``body.py``), Gaussians on its surface (``init.py``) and the DensePose-style
body-part maps that condition a ControlNet for every sampled camera (``partmap.py``).

:func:`avatar_setup` is the one place a config's ``avatar`` section becomes a body, its Gaussians and the
trainer's ``control_fn``; the trainer calls it for a new run and for a resumed one, so the CLI and the app only
set ``avatar.*`` in the config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lucid_app.avatar.body import AvatarError, Gender, Pose, build_body, find_model_file, load_pose
from lucid_app.avatar.init import avatar_gaussians
from lucid_app.avatar.partmap import control_fn_for, part_map
from lucid_app.config import CameraConfig, TrainConfig
from lucid_app.render.cameras import CameraBatch, orbit_cameras
from lucid_app.scene.gaussians import GaussianModel

SMPL_DIR_HINT = ("--smpl-dir DIR on the CLI: the folder with SMPL_NEUTRAL.npz, converted once by "
                 "'python -m lucid_app smpl-convert'; see the README, Avatar mode")


def check_avatar(config: TrainConfig) -> None:
    """Fail fast, before any weights load, on what :func:`avatar_setup` would reject: no SMPL folder or file, an
    unknown or bad pose, no ControlNet.

    Raises:
        AvatarError: the message says what to do.
    """
    avatar = config.avatar
    if not avatar.smpl_dir:
        raise AvatarError(f"avatar mode needs avatar.smpl_dir ({SMPL_DIR_HINT})")
    if not config.model.controlnet:
        raise AvatarError("avatar mode needs a ControlNet: set model.controlnet (the 'avatar' preset names one)")
    find_model_file(avatar.smpl_dir, avatar.gender)
    load_pose(avatar.pose)


def avatar_setup(
    config: TrainConfig, device: torch.device | str = "cpu"
) -> tuple[GaussianModel, Callable[[CameraBatch], torch.Tensor]]:
    """Build the body of ``config.avatar``, ``config.init.num_points`` Gaussians on it and its part-map control.

    The Gaussians draw from their own generator seeded with ``config.seed`` (the trainer's generator is untouched,
    so a run's camera and noise draws do not depend on how the starting Gaussians were made).

    Args:
        config: a config with ``avatar.enabled``; ``model.controlnet`` must name a ControlNet.
        device: where the Gaussians live.

    Returns:
        (Gaussians, control_fn: cameras -> [C, H, W, 3] part maps in [0, 1] on the cameras' device).

    Raises:
        AvatarError: no SMPL folder, missing SMPL files, an unknown or bad pose, or no ControlNet.
    """
    check_avatar(config)
    avatar = config.avatar
    body = build_body(avatar.smpl_dir, avatar.pose, avatar.gender)
    generator = torch.Generator().manual_seed(config.seed)
    gaussians = avatar_gaussians(body, config.init, config.optim, generator, device)
    return gaussians, control_fn_for(body)


def front_part_map(
    smpl_dir: str | Path, pose: str | Pose, gender: Gender = "neutral", size_px: int = 256
) -> np.ndarray:
    """The body-part map of ``pose`` seen from the front by the default preview camera (what the app shows).

    Returns:
        [size_px, size_px, 3] uint8 RGB image (black background, :func:`~lucid_app.avatar.partmap.part_palette`).

    Raises:
        AvatarError: missing SMPL files or a bad pose (the message says what to do).
    """
    body = build_body(smpl_dir, pose, gender)
    view = CameraConfig()
    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([view.default_polar_deg]),
                         torch.tensor([view.default_radius]), torch.tensor([view.default_fovy_rad]), size_px, size_px)
    return (part_map(body, cams)[0] * 255.0).round().to(torch.uint8).numpy()
