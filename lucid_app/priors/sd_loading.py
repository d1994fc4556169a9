"""Loading Stable Diffusion for :func:`lucid_app.priors.stable_diffusion.load_stable_diffusion`, and its messages.

A model is a hub id, a local diffusers folder (with ``model_index.json``) or a single ``.safetensors``/``.ckpt``
checkpoint. Only the UNet, VAE, text encoder, tokenizer and scheduler config are loaded (no safety checker, no feature
extractor); textual-inversion embeddings and a LoRA (fused at ``lora_scale``, needs ``peft``) are applied at load
time, an optional ControlNet is loaded beside the UNet. Without ``allow_pickle`` only ``.safetensors`` weights are
read (:mod:`lucid_app.config.trust`). Every failure becomes one :class:`~lucid_app.priors.base.PriorError` in our words
(:func:`missing_model_message`), never the hub's or diffusers' advice.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import ControlNetModel
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError

from lucid_app.config import DEFAULT_MODEL
from lucid_app.config.trust import ALLOW_PICKLE_HINT
from lucid_app.priors.base import PriorError
from lucid_app.priors.model_ref import SINGLE_FILE_SUFFIXES, looks_like_path

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

logger = logging.getLogger(__name__)

PAPER_MODEL = "stabilityai/stable-diffusion-2-1-base"
PEFT_REQUIREMENT = "peft==0.21.2"
# Errors the hub, the filesystem and diffusers' path checks raise for a model that cannot be found or read, and those
# safetensors, torch and diffusers raise on a file of the wrong content: anything named .safetensors/.txt that is not
# safetensors (SafetensorError), a damaged pickle with allow_pickle (UnpicklingError, EOFError, RuntimeError from the
# zip reader), a state dict of other keys or shapes (KeyError, RuntimeError). Each becomes one PriorError line.
_LOAD_ERRORS = (OSError, ValueError, EntryNotFoundError, SafetensorError, pickle.UnpicklingError, EOFError,
                RuntimeError, KeyError)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def missing_model_message(model_id: str, reason: str) -> str:
    """The one message for a model that cannot be loaded: what was tried, the alternatives, the offline flag."""
    offline = (
        "HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache can be loaded (unset it to "
        "download)."
        if _hub_offline()
        else "HF_HUB_OFFLINE is not set, so the hub was tried: check the id and the network."
    )
    return (
        f"Could not load the diffusion model {model_id!r}: {reason}\n"
        f"The paper's {PAPER_MODEL!r} was removed from the hub in late 2025; the community mirror "
        f"{DEFAULT_MODEL!r} holds the same weights. You can also give a local diffusers folder (with "
        f"model_index.json) or a single .safetensors file.\n{offline}"
    )


# Hub and diffusers failures, by phrases of their messages, and the reason we give instead: their texts advise
# things that do not apply to our users (pass local_files_only=False, read a stack trace we do not show).
_LIBRARY_REASONS = (
    (("not fully cached", "cached snapshot", "outgoing traffic has been disabled", "local_files_only", "offline mode"),
     "the model is not in the local Hugging Face cache"),
    (("repository not found", "not a valid model identifier"),
     "no such model on the Hugging Face hub (check the id; a private model needs `hf auth login`)"),
    (("gated repo", "401 client error", "403 client error"),
     "the model is gated or private: accept its terms on its hub page and log in with `hf auth login`"),
    (("couldn't connect", "connection error", "max retries exceeded", "failed to resolve", "timed out"),
     "the Hugging Face hub could not be reached (check the network)"),
)
# Advice in other library messages that we cut (sentence by sentence) rather than pass on.
_LIBRARY_ADVICE = ("stacktrace", "stack trace", "local_files_only", "weights_only", "file an issue", "open an issue")


def _first_line(err: BaseException) -> str:
    """Why a load failed, in one line of our own: a known hub / diffusers failure in our words, a file that is not
    safetensors, else the error's first line without the library's advice (the full error goes to the debug log)."""
    text = str(err).strip()
    if isinstance(err, SafetensorError):
        return f"it is not a .safetensors file ({text.splitlines()[0] if text else 'unreadable header'})"
    lowered = text.lower()
    for phrases, reason in _LIBRARY_REASONS:
        if any(phrase in lowered for phrase in phrases):
            return reason
    line = text.splitlines()[0] if text else ""
    sentences = [s for s in line.split(". ") if not any(advice in s.lower() for advice in _LIBRARY_ADVICE)]
    return ". ".join(sentences).strip() or type(err).__name__


def _check_local(name: str, what: str, need_model_index: bool) -> tuple[Path | None, str]:
    """The local path ``name`` names (None for a hub id) and why it is unusable ("" when it is usable)."""
    path = Path(name).expanduser()
    if not path.exists():
        return None, (f"no such {what} file or folder" if looks_like_path(name) else "")
    if path.is_dir() and need_model_index and not (path / "model_index.json").is_file():
        return path, "the folder has no model_index.json (not a diffusers folder)"
    if path.is_file() and not path.name.lower().endswith(SINGLE_FILE_SUFFIXES):
        return path, f"a checkpoint file must end in {' or '.join(SINGLE_FILE_SUFFIXES)}"
    return path, ""


@functools.cache
def pipeline_class() -> type[StableDiffusionPipeline]:
    """diffusers' ``StableDiffusionPipeline``, imported on first use.

    Importing it makes transformers warn that its image processors "require torchvision" and to install it; we
    never use those processors (no safety checker, no feature extractor) and torchvision must not be installed
    beside the CPU torch (DESIGN §7), so that one warning is silenced during the import.
    """
    import transformers.utils.logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        from diffusers import StableDiffusionPipeline
    finally:
        hf_logging.set_verbosity(verbosity)
    return StableDiffusionPipeline


def load_pipeline(
    model_id: str, dtype: torch.dtype, single_file_config: str | None, allow_pickle: bool = False
) -> StableDiffusionPipeline:
    """UNet, VAE, text encoder, tokenizer and scheduler in a pipeline object (used only as a loader).

    Without ``allow_pickle`` a folder or hub repo is read with ``use_safetensors=True``: pickled ``.bin`` weights
    are refused rather than unpickled (:mod:`lucid_app.config.trust`).
    """
    path, problem = _check_local(model_id, "model", need_model_index=True)
    if problem:
        raise PriorError(missing_model_message(model_id, problem))
    skip = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    try:
        if path is not None and path.is_file():
            return pipeline_class().from_single_file(
                str(path), config=single_file_config, dtype=dtype, **skip
            )
        return pipeline_class().from_pretrained(str(path or model_id), dtype=dtype, **_safetensors(allow_pickle),
                                                 **skip)
    except _LOAD_ERRORS as err:
        logger.debug("loading %s failed", model_id, exc_info=True)
        reason = _first_line(err)
        if not allow_pickle and _names_pickled_weights(err):
            reason = f"it has no .safetensors weights ({ALLOW_PICKLE_HINT})"
        if path is not None and path.is_file() and not single_file_config:
            reason += (
                " (a single-file checkpoint needs its component configs: from the hub cache, or set "
                "model.single_file_config to a diffusers folder of the same architecture)"
            )
        raise PriorError(missing_model_message(model_id, reason)) from None


def _controlnet_message(controlnet_id: str, reason: str) -> str:
    return (
        f"Could not load the ControlNet {controlnet_id!r}: {reason}\n"
        "Give a local diffusers ControlNet folder, a .safetensors file or a cached hub id "
        f"(HF_HUB_OFFLINE is {'set' if _hub_offline() else 'not set'})."
    )


def load_controlnet(controlnet_id: str, dtype: torch.dtype, allow_pickle: bool = False) -> ControlNetModel:
    path, problem = _check_local(controlnet_id, "ControlNet", need_model_index=False)
    if problem:
        raise PriorError(_controlnet_message(controlnet_id, problem))
    try:
        if path is not None and path.is_file():
            return ControlNetModel.from_single_file(str(path), dtype=dtype)
        return ControlNetModel.from_pretrained(str(path or controlnet_id), dtype=dtype, **_safetensors(allow_pickle))
    except _LOAD_ERRORS as err:
        logger.debug("loading ControlNet %s failed", controlnet_id, exc_info=True)
        raise PriorError(_controlnet_message(controlnet_id, _first_line(err))) from None


def _peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def apply_textual_inversion(pipe: StableDiffusionPipeline, paths: tuple[str, ...], allow_pickle: bool = False) -> None:
    """Add each embedding's token(s) to the tokenizer and its vector(s) to the text encoder's input embeddings.

    Files in the diffusers format (``{token: [D] or [N, D]}``) and the A1111 format (``string_to_param``) work.
    """
    for path in paths:
        try:
            pipe.load_textual_inversion(path, **_safetensors(allow_pickle))
        except _LOAD_ERRORS as err:
            logger.debug("loading the textual inversion %s failed", path, exc_info=True)
            raise PriorError(f"Could not load the textual-inversion embedding {path!r}: {_first_line(err)}") from None
        logger.info("textual inversion loaded from %s", path)


def apply_lora(pipe: StableDiffusionPipeline, path: str, scale: float, allow_pickle: bool = False) -> None:
    """Load a LoRA into the UNet (and text encoder, if it has layers for it) and fuse it at ``scale``."""
    if not _peft_available():
        raise PriorError(
            f"LoRA {path!r} needs the optional package peft: pip install {PEFT_REQUIREMENT}, "
            "or leave model.lora empty."
        )
    local = Path(path).expanduser()
    kwargs = {"weight_name": local.name} if local.is_file() else {}
    source = str(local.parent) if local.is_file() else path
    try:
        pipe.load_lora_weights(source, adapter_name="lucid", **kwargs, **_safetensors(allow_pickle))
    except _LOAD_ERRORS as err:
        logger.debug("loading the LoRA %s failed", path, exc_info=True)
        raise PriorError(f"Could not load the LoRA {path!r}: {_first_line(err)}") from None
    # Fusing folds scale·BA into the base weights: no extra matmuls per UNet call; unloading drops the adapters.
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()
    logger.info("LoRA %s fused at scale %g", path, scale)


def _safetensors(allow_pickle: bool) -> dict[str, bool]:
    """diffusers' loader flag: ``use_safetensors=True`` refuses pickled weights; None lets it fall back to them."""
    return {} if allow_pickle else {"use_safetensors": True}


def _names_pickled_weights(err: BaseException) -> bool:
    """Whether a loading error says only non-safetensors (pickled) weights were found."""
    text = str(err).lower()
    return "safetensors" in text
