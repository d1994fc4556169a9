"""What lucid-app loads, and what it accepts from a client of the app (DESIGN §6b, docs/SECURITY.md).

Two rules live here, so that every loader and every app handler applies the same ones:

1. **Weights are never unpickled unless the operator says so.** ``.ckpt``, ``.bin``, ``.pt`` and ``.pth``
   files are Python pickles: loading one can run arbitrary code. Stable Diffusion, ControlNet, LoRA and
   textual-inversion weights are therefore read from ``.safetensors`` only (diffusers folders and hub repos
   with safetensors weights included) unless the caller passes ``allow_pickle=True`` — which only the CLI
   does, behind its explicit ``--allow-pickle`` flag. The app never does.
2. **A client names no server file.** In the app, a config that a browser or API client assembled may not
   point at files on the server beyond a model (hub id, diffusers folder, ``.safetensors``): presets are
   picked by name, ``init.path`` may only name a file inside the app's outputs folder, an avatar's pose is one
   of the shipped poses, and the SMPL folder is the server's own setting (``app.py --smpl-dir``), never the
   client's.
"""

from __future__ import annotations

from pathlib import Path

from lucid_app.config import ConfigError, ModelConfig, TrainConfig

# File name endings of pickle-based weight formats (PyTorch's torch.save and the original SD checkpoints).
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
SAFE_SUFFIX = ".safetensors"
ALLOW_PICKLE_HINT = "the command line loads them with --allow-pickle, if you trust the file"


class UnsafeWeightsError(ValueError):
    """A weight file in a pickle format was named where pickles are not allowed (the message says which)."""


def weight_sources(model: ModelConfig) -> list[tuple[str, str]]:
    """Every weight source a model config names, as (config key, value): the model, ControlNet, LoRA and each
    textual-inversion embedding (empty settings and ``multiview:`` datasets are left out)."""
    sources = [("model.id", model.id), ("model.controlnet", model.controlnet), ("model.lora", model.lora)]
    sources += [(f"model.textual_inversion[{i}]", p) for i, p in enumerate(model.textual_inversion)]
    return [(key, value) for key, value in sources if value and not value.startswith("multiview:")]


def is_pickle_file(name: str) -> bool:
    """True when ``name`` ends like a pickle-based weight file (``.ckpt``, ``.bin``, ``.pt``, ...)."""
    return name.strip().lower().endswith(PICKLE_SUFFIXES)


def check_weights(model: ModelConfig, allow_pickle: bool = False) -> None:
    """Refuse pickle-format weight files unless ``allow_pickle``.

    This catches the files a config names directly; folders and hub repos are loaded with
    ``use_safetensors=True`` by :mod:`lucid_app.priors.stable_diffusion`, which refuses their pickled weights.

    Raises:
        UnsafeWeightsError: a named weight file is a pickle and ``allow_pickle`` is False.
    """
    if allow_pickle:
        return
    for key, value in weight_sources(model):
        if is_pickle_file(value):
            raise UnsafeWeightsError(
                f"{key}: {Path(value).name!r} is a pickle-format weight file, which can run code when loaded; "
                f"only {SAFE_SUFFIX} files, diffusers folders and hub ids are loaded ({ALLOW_PICKLE_HINT})"
            )


def check_client_config(config: TrainConfig, outputs: Path, smpl_dir: str = "") -> None:
    """Refuse what a client of the app may not ask for (module docstring, rule 2), before the job is queued.

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
