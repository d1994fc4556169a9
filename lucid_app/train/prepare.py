"""Preparing a run: resolve its config and load its prior, falling back to the offline demo.

Shared by the CLI and the app so both resolve configs and fall back to the demo the same way.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lucid_app.config import DEFAULT_MODEL, ConfigError, ModelConfig, TrainConfig, replace
from lucid_app.config.devices import resolve_device
from lucid_app.config.negatives import resolve_negative
from lucid_app.config.presets import REPO_ROOT, load_config
from lucid_app.config.trust import is_pickle_file
from lucid_app.io.files import OutputError, atomic_temp_glob, check_output_dir
from lucid_app.io.run_layout import RUN_OUTPUT_PATTERNS
from lucid_app.priors import load_prior
from lucid_app.priors.base import DiffusionPrior, PriorError
from lucid_app.priors.learned_folder import is_prior_folder
from lucid_app.priors.multiview import MODEL_PREFIX
from lucid_app.priors.sd_loading import hub_model_loadable

logger = logging.getLogger(__name__)

DEMO_PRESET = "demo"
DEMO_MODEL = MODEL_PREFIX + "assets/demo"
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def resolve_config(
    preset: str | None = None,
    prompt: str | None = None,
    negative: str | None = None,
    model: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> TrainConfig:
    """Defaults ← preset ← ``--set`` overrides ← explicit prompt / negative / model, checked strictly.

    A negative prompt ``"@NAME"`` (from any of these) is replaced here by the library's text
    (:func:`lucid_app.config.negatives.resolve_negative`) — the one place such references are resolved.

    Raises:
        ConfigError: unknown preset or key, wrong type, an unknown ``@NAME`` negative, or an empty prompt.
    """
    config = load_config(preset, overrides)
    if prompt is not None:
        config = replace(config, prompt=replace(config.prompt, text=prompt))
    if negative is not None:
        config = replace(config, prompt=replace(config.prompt, negative=negative))
    if model is not None:
        config = replace(config, model=replace(config.model, id=model))
    if not config.prompt.text.strip():
        raise ConfigError("the prompt is empty: give --prompt TEXT or a preset with prompt.text")
    config = resolve_negative(config)
    return absolute_paths(config)


def resolve_model_id(model_id: str) -> str:
    """A model id whose local path is absolute, so that a run's ``config.yaml`` (and ``--resume``) works from any
    working folder.

    ``multiview:DIR`` and local folders or checkpoint files that exist relative to the working folder become
    absolute; a relative ``multiview:`` path or learned-prior folder that does not exist there is looked up in the
    repository (so ``presets/demo.yaml`` and ``presets/learned_demo.yaml`` work from anywhere). Hub ids, and paths
    found nowhere (the loader names them in its error), are returned unchanged.
    """
    prefix = MODEL_PREFIX if model_id.startswith(MODEL_PREFIX) else ""
    value = model_id[len(prefix):]
    return prefix + _absolute_if_local(value, search_repo=bool(prefix) or is_prior_folder(REPO_ROOT / value))


def check_model(model: str) -> None:
    """Accept "" (the preset's model), ``multiview:DIR`` with an existing DIR, an existing local path or a hub id.

    Raises:
        ConfigError: anything else, naming what is accepted.
    """
    if not model:
        return
    if is_pickle_file(model):
        raise ConfigError(
            f"model {Path(model).name!r} is a pickle-format checkpoint, which can run code when loaded; the app "
            "loads hub ids, diffusers folders and .safetensors files only"
        )
    if model.startswith(MODEL_PREFIX):
        if not Path(resolve_model_id(model)[len(MODEL_PREFIX):]).exists():
            raise ConfigError(f"model {model!r}: no such multi-view dataset folder")
        return
    if Path(model).expanduser().exists() or _HUB_ID.fullmatch(model):
        return
    raise ConfigError(
        f"unknown model {model!r}: give a Hugging Face hub id (owner/name), a local diffusers folder or "
        f".safetensors file, or pick the offline demo ({DEMO_MODEL})"
    )


def _absolute_if_local(value: str, search_repo: bool = False) -> str:
    """``value`` as an absolute path when it names an existing file or folder (or, with ``search_repo``, one in the
    repository), else unchanged (a hub id, a preset name, empty)."""
    if not value.strip():
        return value
    path = Path(value).expanduser()
    if path.exists():
        return os.path.abspath(path)
    if search_repo and not path.is_absolute() and (REPO_ROOT / path).exists():
        return str(REPO_ROOT / path)
    return value


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with every local path it names made absolute (model, embeddings, LoRA, ControlNet, single-file
    configs, the SMPL folder and a pose file): what ``config.yaml`` records, valid from any working folder."""
    model = config.model
    model = replace(
        model, id=resolve_model_id(model.id), lora=_absolute_if_local(model.lora),
        controlnet=_absolute_if_local(model.controlnet),
        single_file_config=_absolute_if_local(model.single_file_config),
        textual_inversion=tuple(_absolute_if_local(p) for p in model.textual_inversion),
    )
    avatar = replace(config.avatar, smpl_dir=_absolute_if_local(config.avatar.smpl_dir),
                     pose=_absolute_if_local(config.avatar.pose))
    return replace(config, model=model, avatar=avatar)


def check_new_run_dir(out: str | Path, overwrite: bool = False) -> tuple[Path, list[Path]]:
    """Check, before any work, that a new run may write into ``out``: a folder that is new, empty, or (with
    ``overwrite``) anything but a file.

    Returns:
        (the folder, the files of an earlier run in it that the new run replaces: delete them with
        ``export.remove_files`` once the run is ready to start, so a failed start destroys nothing). Other files in
        the folder are never touched.

    Raises:
        OutputError: ``out`` is a file or cannot be written, or it is a folder that is not empty and ``overwrite``
            is False (the message names ``--resume`` and ``--overwrite``).
    """
    path = check_output_dir(out)
    if not path.is_dir() or not any(path.iterdir()):
        return path, []
    globs = [g for pattern in RUN_OUTPUT_PATTERNS for g in (pattern, atomic_temp_glob(pattern))]
    previous = sorted({p for g in globs for p in path.glob(g) if p.is_file() or p.is_symlink()})
    if overwrite:
        return path, previous
    if previous:
        raise OutputError(
            f"--out {path} already holds a run (its model, checkpoint and metrics would be replaced): continue it "
            f"with --resume {path}, or start over with --overwrite"
        )
    raise OutputError(f"--out {path} is not empty: choose a new folder, or pass --overwrite to write into it "
                      "(only a run's own files are ever replaced)")


@dataclass(frozen=True)
class PreparedRun:
    """A config and its loaded prior; ``notice`` says plainly when the offline demo replaced the request."""

    config: TrainConfig
    prior: DiffusionPrior
    notice: str | None = None


def load_run_prior(
    config: TrainConfig,
    device: str | torch.device = "auto",
    allow_demo: bool = True,
    loader: Callable[[ModelConfig, torch.device], DiffusionPrior] | None = None,
    overrides: Sequence[str] = (),
) -> PreparedRun:
    """Load ``config.model``; when it is the default Stable Diffusion model and its weights are unavailable (and
    ``allow_demo``), run the offline demo instead and say so.

    The demo keeps the user's prompt when it names a demo object, else it uses the demo preset's prompt. The demo
    preset's settings apply, then the user's own ``overrides`` (the ``key=value`` strings that made ``config``:
    ``--set`` flags, an explicit negative prompt, UI fields), except those that cannot apply to the demo
    (``model.*``, ``avatar.*``; ``prompt.text`` is handled as said): the notice names which were applied and which
    dropped. ``config.seed`` carries over too. ``loader(model_config, device)`` loads a prior (default:
    ``load_prior``; the app passes its model cache).

    Raises:
        PriorError: the model cannot be loaded and no fallback applies (the message says what to do).
        ConfigError: an override is invalid on top of the demo preset.
    """
    torch_device = resolve_device(device)
    load = loader or (lambda model, dev: load_prior(model.id, model, dev))
    try:
        return PreparedRun(config, load(config.model, torch_device))
    except PriorError as err:
        # The demo has no body: an avatar run never silently becomes the demo.
        if not (allow_demo and config.model.id == DEFAULT_MODEL and not config.avatar.enabled):
            raise
        logger.info("%s", err)
    applied, dropped = demo_overrides(overrides)
    try:
        demo = resolve_config(DEMO_PRESET, overrides=[f"seed={config.seed}", *applied])
    except ConfigError as err:
        raise ConfigError(f"running the offline demo instead of {config.model.id!r}: {err}") from None
    prior = load(demo.model, torch_device)
    prompt = demo.prompt.text
    try:
        prior.encode_prompts([config.prompt.text])
        prompt = config.prompt.text
    except PriorError:
        pass
    demo = replace(demo, prompt=replace(demo.prompt, text=prompt))
    captions = ", ".join(repr(c) for c in getattr(prior, "captions", []))
    notice = (
        f"No Stable Diffusion weights are available for {config.model.id!r} (offline, or not downloaded yet). "
        f"Running the built-in offline demo instead: the multi-view prior {demo.model.id} with prompt {prompt!r} "
        f"(demo objects: {captions}); the demo preset's settings apply"
        + (f", with your overrides {', '.join(applied)}" if applied else "")
        + (f"; dropped, as they do not apply to the demo: {', '.join(dropped)}" if dropped else "")
        + "."
    )
    logger.warning("%s", notice)
    return PreparedRun(demo, prior, notice)


def demo_stands_in(config: TrainConfig, allow_demo: bool = True) -> bool:
    """Whether :func:`load_run_prior` will run the offline demo instead of ``config``: the default model is asked
    for, the demo may stand in, and its weights cannot load here (offline and not in the cache). Reads the hub's
    cache only."""
    return (allow_demo and config.model.id == DEFAULT_MODEL and not config.avatar.enabled
            and not hub_model_loadable(config.model.id))


# Override keys that cannot apply to the offline demo: it has its own model, and no body.
_NOT_FOR_DEMO = ("model", "avatar")


def demo_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``key=value`` overrides into those the offline demo applies and those it drops (``model.*``,
    ``avatar.*``). ``prompt.text`` is in neither: the demo keeps the prompt only when it names a demo object."""
    applied, dropped = [], []
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key == "prompt.text":
            continue
        (dropped if key.split(".")[0] in _NOT_FOR_DEMO else applied).append(text)
    return applied, dropped

