"""What a client of the app may ask for (DESIGN §6b, docs/SECURITY.md): a config that a browser or API client
assembled may not point at files on the server beyond a model (hub id, diffusers folder, ``.safetensors``): presets
are picked by name, ``init.path`` may only name a file inside the app's outputs folder, an avatar's pose is one of
the shipped poses, and the SMPL folder is the server's own setting (``app.py --smpl-dir``), never the client's.
Weights follow :mod:`lucid_app.config.trust` (never a pickle)."""

from __future__ import annotations

from pathlib import Path

from lucid_app.config import ConfigError, TrainConfig
from lucid_app.config.trust import UnsafeWeightsError, check_weights, is_pickle_file


def check_client_config(config: TrainConfig, outputs: Path, smpl_dir: str = "") -> None:
    """Refuse what a client of the app may not ask for (module docstring), before the job is queued.

    Args:
        config: the config resolved from the client's form and overrides.
        outputs: the app's outputs root; ``init.path`` may only name a file inside it.
        smpl_dir: the server's SMPL folder ("" = none); a client's config must not name another one.

    Raises:
        ConfigError: the message names the key and what is allowed.
    """
    try:
        check_weights(config.model, allow_pickle=False)
    except UnsafeWeightsError as err:
        raise ConfigError(str(err)) from None
    if config.model.single_file_config and is_pickle_file(config.model.single_file_config):
        raise ConfigError("model.single_file_config: give a diffusers folder or hub id (configs only)")
    if config.init.path:
        root = Path(outputs).resolve()
        if not Path(config.init.path).expanduser().resolve().is_relative_to(root):
            raise ConfigError("init.path: the app only reads files of its own runs (a run's model.ply); "
                              "other server files cannot be named")
    if config.avatar.smpl_dir and config.avatar.smpl_dir != smpl_dir:
        raise ConfigError("avatar.smpl_dir is the server's setting (app.py --smpl-dir), not a client's")
    if config.avatar.enabled:
        from lucid_app.avatar.body import pose_names

        if config.avatar.pose not in pose_names():
            raise ConfigError(f"avatar.pose: pick one of the poses {', '.join(pose_names())} (the app reads no "
                              "pose files)")
