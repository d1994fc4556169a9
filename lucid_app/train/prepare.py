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
from lucid_app.io.files import OutputError, atomic_temp_glob, check_output_dir
from lucid_app.io.run_layout import RUN_OUTPUT_PATTERNS
from lucid_app.lab.doctor.verdicts import drift_notice
from lucid_app.priors import load_prior
from lucid_app.priors.base import DiffusionPrior, PriorError
from lucid_app.priors.model_ref import MULTIVIEW_PREFIX, model_ref_of, parse_model_ref

logger = logging.getLogger(__name__)

DEMO_PRESET = "demo"
# What a run that names no model and no preset runs on a machine without CUDA: the offline demo that
# docs/BENCHMARKS.md ("Quality on a learned prior") measures best. Today the analytic demo: 29.2 dB on the car with
# ISM, against 23.1 dB for the learned prior (``learned_demo``, SDS) at the same 1000 steps.
CPU_PRESET = DEMO_PRESET
CPU_DEMO_REASON = ("No CUDA device here, so the offline demo runs (minutes; Stable Diffusion would take days to weeks "
                   "on a CPU; to run it anyway: --preset paper --force)")
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
    """A model id whose local path is absolute (:func:`~lucid_app.priors.model_ref.parse_model_ref`), so that a run's
    ``config.yaml`` (and ``--resume``) works from any working folder; hub ids, and paths found nowhere (the loader
    names them in its error), come back unchanged."""
    try:
        return parse_model_ref(model_id).id
    except ConfigError:
        return model_id


def hub_offline() -> bool:
    """Whether the Hugging Face hub is off (``HF_HUB_OFFLINE``): only cached weights can load."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def weights_available(model_id: str) -> bool:
    """Whether a Stable Diffusion model's weights can load on this machine: a local folder or file that exists, a hub
    id in the local Hugging Face cache, or any hub id while the hub is reachable (not offline). Where they cannot,
    the loader's message, not a run-time estimate, is what the user needs first."""
    if Path(model_id).expanduser().exists():
        return True
    if not _HUB_ID.fullmatch(model_id):
        return False
    if not hub_offline():
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "model_index.json"), str)
    except ValueError:
        return False


def _absolute_if_local(value: str) -> str:
    """``value`` as an absolute path when it names an existing file or folder, else unchanged (a preset's pose name,
    empty)."""
    if not value.strip():
        return value
    path = Path(value).expanduser()
    return os.path.abspath(path) if path.exists() else value


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with every local path it names made absolute (model, embeddings, LoRA, ControlNet, single-file
    configs, the SMPL folder and a pose file): what ``config.yaml`` records, valid from any working folder.

    Raises:
        ConfigError: an empty model id.
    """
    model = model_ref_of(config.model).applied(config.model)
    model = replace(model, single_file_config=_absolute_if_local(model.single_file_config))
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
    """A config and its loaded prior; ``notice`` says plainly when the offline demo replaced the request, and when
    the doctor measured that the run's method drifts on its model."""

    config: TrainConfig
    prior: DiffusionPrior
    notice: str | None = None


def load_run_prior(
    config: TrainConfig,
    device: str | torch.device = "auto",
    allow_demo: bool = True,
    loader: Callable[[ModelConfig, torch.device], DiffusionPrior] | None = None,
    overrides: Sequence[str] = (),
    machine_choice: bool = False,
) -> PreparedRun:
    """Load ``config.model``; when it is the default Stable Diffusion model and its weights are unavailable (and
    ``allow_demo``), run the offline demo instead and say so.

    ``machine_choice``: the run named no model and no preset (the README's first command), so it runs what this
    machine can finish: on a device without CUDA the offline demo (:data:`CPU_DEMO_PRESET`) at once, without trying
    Stable Diffusion (which would download gigabytes and take weeks there), and the notice says so and how to run
    Stable Diffusion anyway; with CUDA, Stable Diffusion as usual.

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
    replaceable = allow_demo and config.model.id == DEFAULT_MODEL and not config.avatar.enabled
    if machine_choice and replaceable and torch_device.type != "cuda":
        return _demo_instead(config, torch_device, load, overrides, CPU_DEMO_REASON, CPU_PRESET)
    try:
        return _with_drift_notice(PreparedRun(config, load(config.model, torch_device)))
    except PriorError as err:
        # The demo has no body: an avatar run never silently becomes the demo.
        if not replaceable:
            raise
        logger.info("%s", err)
    reason = (f"No Stable Diffusion weights are available for {config.model.id!r} (offline, or not downloaded "
              "yet): running the built-in offline demo instead")
    return _demo_instead(config, torch_device, load, overrides, reason, DEMO_PRESET)


def _demo_instead(config: TrainConfig, device: torch.device,
                  load: Callable[[ModelConfig, torch.device], DiffusionPrior], overrides: Sequence[str], reason: str,
                  preset: str) -> PreparedRun:
    """The offline demo ``preset`` in place of ``config`` (see :func:`load_run_prior`), with a one-line notice that
    starts with ``reason`` and names no server path."""
    applied, dropped = demo_overrides(overrides)
    try:
        demo = resolve_config(preset, overrides=[f"seed={config.seed}", *applied])
    except ConfigError as err:
        raise ConfigError(f"running the offline demo instead of {config.model.id!r}: {err}") from None
    prior = load(demo.model, device)
    captions = list(getattr(prior, "captions", []))
    prompt = demo.prompt.text
    try:
        prior.encode_prompts([config.prompt.text])
        prompt = config.prompt.text
    except PriorError:
        pass
    demo = replace(demo, prompt=replace(demo.prompt, text=prompt))
    known = ", ".join(repr(c) for c in captions)
    made = (f"it makes {prompt!r}" if prompt == config.prompt.text
            else f"{config.prompt.text!r} is not one of its objects ({known}), so it makes {prompt!r}")
    notice = (
        f"{reason}: the {preset!r} preset on the prior {display_model(demo.model.id)}; {made}"
        + (f"; your settings {', '.join(applied)} apply" if applied else "")
        + (f"; dropped, as they do not apply to the demo: {', '.join(dropped)}" if dropped else "")
        + "."
    )
    logger.warning("%s", notice)
    return _with_drift_notice(PreparedRun(demo, prior, notice))


def _with_drift_notice(prepared: PreparedRun) -> PreparedRun:
    """``prepared`` with the doctor's warning appended to its notice when its method is known to drift on its model
    (:func:`lucid_app.lab.doctor.verdicts.drift_notice`); the CLI logs it and the app shows it before training."""
    drift = drift_notice(prepared.config.model.id, prepared.config.guidance.method)
    if drift is None:
        return prepared
    logger.warning("%s", drift)
    notice = drift if prepared.notice is None else f"{prepared.notice} {drift}"
    return PreparedRun(prepared.config, prepared.prior, notice)


def display_model(model_id: str) -> str:
    """A model id as a person reads it: a path inside the repository relative to it (``multiview:assets/demo``),
    any other local path by its folder or file name only (never a server's absolute path), a hub id as it is."""
    ref = parse_model_ref(model_id)
    prefix = MULTIVIEW_PREFIX if ref.kind == "multiview" else ""
    path = Path(ref.location)
    if ref.kind == "hub" or not path.is_absolute():
        return model_id
    try:
        return prefix + path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return prefix + path.name


def demo_stands_in(config: TrainConfig, allow_demo: bool = True) -> bool:
    """Whether :func:`load_run_prior` will run the offline demo instead of ``config``: the default model is asked
    for, the demo may stand in, and its weights cannot load here (:func:`weights_available`: offline and not in the
    cache). Reads the hub's cache only, never the network."""
    return (allow_demo and config.model.id == DEFAULT_MODEL and not config.avatar.enabled
            and not weights_available(config.model.id))


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

