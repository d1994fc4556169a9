"""Preparing a run: resolve its config and load its prior, falling back to the offline demo.

Shared by the CLI and the app so both resolve configs and fall back to the demo the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lucid_app.config import DEFAULT_MODEL, ConfigError, ModelConfig, TrainConfig, replace
from lucid_app.devices import resolve_device
from lucid_app.negatives import resolve_negative
from lucid_app.presets import load_config
from lucid_app.priors import load_prior
from lucid_app.priors.base import DiffusionPrior, PriorError
from lucid_app.priors.multiview import MODEL_PREFIX

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_PRESET = "demo"


def resolve_config(
    preset: str | None = None,
    prompt: str | None = None,
    negative: str | None = None,
    model: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> TrainConfig:
    """Defaults ← preset ← ``--set`` overrides ← explicit prompt / negative / model, checked strictly.

    A negative prompt ``"@NAME"`` (from any of these) is replaced here by the library's text
    (:func:`lucid_app.negatives.resolve_negative`) — the one place such references are resolved.

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
    return replace(config, model=replace(config.model, id=resolve_model_id(config.model.id)))


def resolve_model_id(model_id: str) -> str:
    """``multiview:`` paths relative to neither the working folder nor absolute are looked up in the repository
    (so ``presets/demo.yaml`` works from anywhere); everything else is returned unchanged."""
    if not model_id.startswith(MODEL_PREFIX):
        return model_id
    path = Path(model_id[len(MODEL_PREFIX):]).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    return f"{MODEL_PREFIX}{path}"


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
) -> PreparedRun:
    """Load ``config.model``; when it is the default Stable Diffusion model and its weights are unavailable (and
    ``allow_demo``), run the offline demo instead and say so.

    The demo keeps the user's prompt when it names a demo object, else it uses the demo preset's prompt; the demo
    preset's other settings apply. ``loader(model_config, device)`` loads a prior (default: ``load_prior``; the
    app passes its model cache).

    Raises:
        PriorError: the model cannot be loaded and no fallback applies (the message says what to do).
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
    demo = resolve_config(DEMO_PRESET, overrides=[f"seed={config.seed}"])
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
        f"(demo objects: {captions}); the demo preset's settings apply."
    )
    logger.warning("%s", notice)
    return PreparedRun(demo, prior, notice)

