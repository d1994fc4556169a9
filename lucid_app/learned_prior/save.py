"""Writing a learned prior's folder (format: :mod:`lucid_app.priors.learned_folder`): the loadable components with
``save_pretrained`` (weights as ``.safetensors``), the metadata and the loss log through :mod:`lucid_app.io`, and
removing a previous prior's own files on ``--overwrite``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid_app.priors.learned_folder import LOSS_PLOT_NAME, SCHEDULER_DIR, TEXT_ENCODER_DIR, TOKENIZER_DIR, UNET_DIR

if TYPE_CHECKING:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer


def remove_prior(paths: list[Path]) -> None:
    """Delete a prior's own files and sub-folders (from :func:`existing_prior_paths`); nothing else is touched."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    from lucid_app.io.files import write_text

    write_text(path, json.dumps(data, indent=1) + "\n")


def write_loss_log(path: Path, records: list[tuple[int, float]]) -> None:
    """``loss.jsonl``: one {"step", "loss"} object per logged step; beside it ``loss.svg``, the curve."""
    from lucid_app.io.files import write_text
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
