"""The learned prior's folder: its format, and reading and writing it.

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

The app reads the first five (weights through ``use_safetensors=True`` only, :mod:`lucid_app.trust`); only
``train-prior --resume`` reads ``training_state.pt``, with ``torch.load(weights_only=True)`` (``export``).
Small files are written atomically through :mod:`lucid_app.export`; the weight folders by ``save_pretrained``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid_app.priors.base import PriorError

if TYPE_CHECKING:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

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


def remove_prior(paths: list[Path]) -> None:
    """Delete a prior's own files and sub-folders (from :func:`existing_prior_paths`); nothing else is touched."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    from lucid_app.export import write_text

    write_text(path, json.dumps(data, indent=1) + "\n")


def write_loss_log(path: Path, records: list[tuple[int, float]]) -> None:
    """``loss.jsonl``: one {"step", "loss"} object per logged step; beside it ``loss.svg``, the curve."""
    from lucid_app.export import write_text
    from lucid_app.learned_prior.loss_plot import loss_curve_svg

    write_text(path, "".join(json.dumps({"step": step, "loss": loss}) + "\n" for step, loss in records))
    if any(loss > 0 for _, loss in records):
        write_text(path.with_name(LOSS_PLOT_NAME), loss_curve_svg(records))


def save_weights(folder: Path, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 scheduler: DDPMScheduler) -> None:
    """The four loadable components, with ``save_pretrained`` (weights as ``.safetensors``)."""
    unet.save_pretrained(folder / UNET_DIR, safe_serialization=True)
    text_encoder.save_pretrained(folder / TEXT_ENCODER_DIR, safe_serialization=True)
    tokenizer.save_pretrained(folder / TOKENIZER_DIR)
    scheduler.save_pretrained(folder / SCHEDULER_DIR)
