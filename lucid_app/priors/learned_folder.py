"""The learned prior's folder: its format, and reading it (writing it: :mod:`lucid_app.learned_prior.save`).

A prior folder (what ``--model PRIOR_DIR`` names) holds::

    lucid_prior.json     format name + version, resolution, captions, view words, the training commands and
                         settings, steps done, wall seconds, seed, final loss, parameter counts
    unet/                diffusers UNet2DConditionModel (EMA weights, .safetensors)
    text_encoder/        transformers CLIPTextModel (EMA weights, .safetensors)
    tokenizer/           the CLIP tokenizer built from the captions (tokenizer.json)
    scheduler/           diffusers DDPMScheduler config (SD's β schedule; prediction_type ε, v or x₀)
    loss.jsonl           {"step", "loss"} per logged step (mean training loss since the previous line)
    loss.svg             the same as a curve (log y axis)
    samples.png          rows = captions, columns = view words: DDIM samples of the EMA weights
    training_state.pt    raw weights, optimizer, EMA, step and generator state, for ``--resume`` only

The app reads the first five (weights through ``use_safetensors=True`` only, :mod:`lucid_app.config.trust`); only
``train-prior --resume`` reads ``training_state.pt``, with ``torch.load(weights_only=True)``
(:mod:`lucid_app.io.checkpoints`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lucid_app.priors.base import PriorError

logger = logging.getLogger(__name__)

FORMAT_NAME = "lucid-prior"
FORMAT_VERSION = 1
METADATA_NAME = "lucid_prior.json"
UNET_DIR = "unet"
TEXT_ENCODER_DIR = "text_encoder"
TOKENIZER_DIR = "tokenizer"
SCHEDULER_DIR = "scheduler"
LOSS_NAME = "loss.jsonl"
LOSS_PLOT_NAME = "loss.svg"
SAMPLES_NAME = "samples.png"
STATE_NAME = "training_state.pt"
PRIOR_FILES = (METADATA_NAME, LOSS_NAME, LOSS_PLOT_NAME, SAMPLES_NAME, STATE_NAME)
PRIOR_DIRS = (UNET_DIR, TEXT_ENCODER_DIR, TOKENIZER_DIR, SCHEDULER_DIR)


def is_prior_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``lucid_prior.json`` (what :func:`lucid_app.priors.load_prior` checks)."""
    return (Path(path).expanduser() / METADATA_NAME).is_file()


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """``lucid_prior.json`` of a prior folder, checked.

    Raises:
        PriorError: missing, not JSON, another format or version, or no valid resolution (one line).
    """
    path = Path(folder).expanduser() / METADATA_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PriorError(f"learned prior {folder}: no {METADATA_NAME} (train one with `train-prior`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PriorError(f"learned prior {folder}: {METADATA_NAME} is unreadable or not JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise PriorError(f"learned prior {folder}: {METADATA_NAME} is not a {FORMAT_NAME!r} file")
    if meta.get("version") != FORMAT_VERSION:
        raise PriorError(f"learned prior {folder}: format version {meta.get('version')!r} is not supported "
                         f"(this lucid-app reads version {FORMAT_VERSION})")
    resolution = meta.get("resolution")
    if not isinstance(resolution, int) or resolution <= 0:
        raise PriorError(f"learned prior {folder}: {METADATA_NAME} has no valid 'resolution'")
    return meta


def existing_prior_paths(folder: Path) -> list[Path]:
    """The files and sub-folders of a prior that are in ``folder`` (what ``--overwrite`` replaces)."""
    return [folder / name for name in (*PRIOR_FILES, *PRIOR_DIRS) if (folder / name).exists()]


