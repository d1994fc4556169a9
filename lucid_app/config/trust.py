"""What lucid-app loads (DESIGN §6b, docs/SECURITY.md): weights are never unpickled unless the operator says so.

``.ckpt``, ``.bin``, ``.pt`` and ``.pth`` files are Python pickles: loading one can run arbitrary code. Stable
Diffusion, ControlNet, LoRA and textual-inversion weights are therefore read from ``.safetensors`` only (diffusers
folders and hub repos with safetensors weights included) unless the caller passes ``allow_pickle=True`` — which only
the CLI does, behind its explicit ``--allow-pickle`` flag. The app never does; what its clients may name at all is
:mod:`lucid_app.app.client_config`.
"""

from __future__ import annotations

from pathlib import Path

from lucid_app.config import ModelConfig

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


