"""One ``train-prior`` session: load the data, start or resume the training, write the prior folder, report.

The folder is written every ``checkpoint_s`` seconds (weights, loss log, training state, metadata; a kill loses
at most that much) and at the end, when ``samples.png`` is added. Progress goes to a tqdm bar on stderr with the
running-mean loss and an ETA (towards ``--steps``, or the steps ``--minutes`` leaves at the measured pace).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import CLIPTokenizer

from lucid_app.config import ModelConfig
from lucid_app.guidance.sampling import sample_cfg
from lucid_app.io.checkpoints import load_checkpoint, save_checkpoint
from lucid_app.io.media import write_png
from lucid_app.learned_prior.data import (
    DROP_PROB,
    PLAIN_PROB,
    VIEW_SUFFIX,
    load_training_data,
    view_caption,
)
from lucid_app.learned_prior.model import build_scheduler
from lucid_app.learned_prior.sampling import sample_grid
from lucid_app.learned_prior.save import remove_prior, save_weights, write_json, write_loss_log
from lucid_app.learned_prior.tokenizer import build_tokenizer
from lucid_app.learned_prior.train import PriorTraining, TrainSettings, train_loop
from lucid_app.priors.learned_folder import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LOSS_NAME,
    METADATA_NAME,
    SAMPLES_NAME,
    STATE_NAME,
    TOKENIZER_DIR,
)
from lucid_app.priors.multiview import VIEW_WORDS

logger = logging.getLogger(__name__)

SAMPLE_SEED = 0
# Smoothing of the loss shown on the progress bar (an exponential running mean).
BAR_SMOOTHING = 0.98


def _start(settings: TrainSettings, resume: bool, previous: list[Path], saved: dict[str, Any] | None) -> PriorTraining:
    """The training state: fresh (after removing ``previous``, the prior files ``--overwrite`` replaces) or resumed
    from the folder's ``training_state.pt`` (its captions must be the dataset's)."""
    out = Path(settings.out)
    data = load_training_data(settings.dataset, settings.size)
    if not resume:
        remove_prior(previous)
        return PriorTraining(data, build_tokenizer(data.texts), settings)
    if saved is not None and saved.get("captions") != data.captions:
        raise ValueError(f"--resume: the dataset's captions {data.captions} differ from the prior's "
                         f"{saved.get('captions')}; resume with the dataset it was trained on")
    tokenizer = CLIPTokenizer.from_pretrained(out / TOKENIZER_DIR)
    training = PriorTraining(data, tokenizer, settings)
    training.load_state_dict(load_checkpoint(out / STATE_NAME))
    logger.info("resuming %s at step %d", out, training.step)
    return training


def _metadata(training: PriorTraining, commands: list[str], wall_s: float, s_per_batch: float | None) -> dict[str, Any]:
    records = training.loss_records()
    settings = training.settings
    return {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "resolution": training.data.resolution,
        "space": "pixels, x0 = image * 2 - 1, [3, R, R]", "captions": training.data.captions,
        "view_words": list(VIEW_WORDS), "view_suffix": VIEW_SUFFIX,
        "caption_probabilities": {"empty": DROP_PROB, "plain": round((1 - DROP_PROB) * PLAIN_PROB, 6),
                                  "view": round((1 - DROP_PROB) * (1 - PLAIN_PROB), 6)},
        "dataset": str(Path(settings.dataset).expanduser().resolve()), "train_images": len(training.data),
        "commands": commands, "settings": {k: v for k, v in asdict(settings).items() if k not in ("out", "device")},
        "seed": settings.seed, "steps": training.step, "wall_s": round(wall_s, 3),
        "final_loss": records[-1][1] if records else None, "params": training.params,
        "s_per_batch": None if s_per_batch is None else round(s_per_batch, 4),
    }


def _save(training: PriorTraining, metadata: dict[str, Any]) -> None:
    """Write the folder; ``lucid_prior.json`` last, so a folder that has one has its weights."""
    out = Path(training.settings.out)
    unet, text_encoder = training.ema_models()
    save_weights(out, unet, text_encoder, training.tokenizer, build_scheduler(training.settings.prediction))
    write_loss_log(out / LOSS_NAME, training.loss_records())
    save_checkpoint(out / STATE_NAME, training.state_dict())
    write_json(out / METADATA_NAME, metadata)


def write_samples(out: Path, captions: list[str], steps: int, scale: float, device: str) -> Path:
    """``samples.png`` from the saved folder (loaded as the app loads it): rows = captions, columns = view words."""
    from lucid_app.priors.learned import load_learned_prior

    prior = load_learned_prior(out, ModelConfig(), device)
    prompts = [view_caption(caption, word) for caption in captions for word in VIEW_WORDS]
    x0 = sample_cfg(prior, prompts, (prior.channels, prior.resolution, prior.resolution),
                    torch.Generator().manual_seed(SAMPLE_SEED), steps=steps, scale=scale)
    return write_png(out / SAMPLES_NAME, sample_grid(prior.decode(x0), captions, list(VIEW_WORDS)))


def _progress_bar(training: PriorTraining) -> tuple[tqdm, Any]:
    """A bar on stderr and its per-step callback (running-mean loss; total = the step target or the projection
    of the time left at the mean pace, so tqdm's ETA is meaningful either way)."""
    target = training.settings.steps
    bar = tqdm(total=target, initial=training.step, desc="train-prior", unit="step", file=sys.stderr,
               dynamic_ncols=True)
    state = {"loss": None, "seconds": 0.0, "count": 0}

    def on_step(loss: float, seconds: float, left_s: float | None) -> None:
        state["loss"] = loss if state["loss"] is None else BAR_SMOOTHING * state["loss"] + (1 - BAR_SMOOTHING) * loss
        state["seconds"] += seconds
        state["count"] += 1
        if left_s is not None:
            projected = training.step + int(left_s / (state["seconds"] / state["count"]))
            bar.total = projected if target is None else min(target, projected)
        bar.update(1)
        bar.set_postfix(loss=f"{state['loss']:.4f}")

    return bar, on_step


def run_training(settings: TrainSettings, resume: bool, previous: list[Path], saved: dict[str, Any] | None,
                 command: str, stop: threading.Event) -> dict[str, Any]:
    """Train (or continue) the prior in ``settings.out`` and write its folder; the command's JSON summary.

    Args:
        settings: the session's settings (on ``--resume``, already merged with the saved ones).
        resume: continue from the folder's training state.
        previous: prior files in the folder that a fresh start replaces (``--overwrite``), removed once the data
            loaded (a failed start destroys nothing).
        saved: the folder's ``lucid_prior.json`` on ``--resume`` (its commands, wall seconds and captions).
        command: this session's command line, appended to the metadata's ``commands``.
        stop: ends the session after the current batch (Ctrl-C / SIGTERM).
    """
    training = _start(settings, resume, previous, saved)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    commands = [*(saved or {}).get("commands", []), command]
    wall_before = float((saved or {}).get("wall_s", 0.0))
    start = time.perf_counter()
    batch_seconds: list[float] = []

    def checkpoint() -> None:
        pace = sum(batch_seconds) / len(batch_seconds) if batch_seconds else None
        _save(training, _metadata(training, commands, wall_before + time.perf_counter() - start, pace))

    bar, on_step = _progress_bar(training)
    try:
        train_loop(training, stop, on_step, checkpoint, batch_seconds)
    finally:
        bar.close()
    checkpoint()
    if settings.sample_steps > 0:
        write_samples(out, training.data.captions, settings.sample_steps, settings.sample_scale, settings.device)
    records = training.loss_records()
    return {
        "command": "train-prior", "out": str(out), "steps": training.step,
        "wall_s": round(wall_before + time.perf_counter() - start, 3),
        "final_loss": records[-1][1] if records else None, "params": training.params,
        "s_per_batch": round(sum(batch_seconds) / len(batch_seconds), 4) if batch_seconds else None,
    }
