"""``python -m lucid_app train-prior``: the CLI sub-command that trains a learned prior (DESIGN §5b).

Importing this module is cheap (argparse only): the training modules load when the command runs. Every check
that needs no data (flags, the output folder, the saved state on ``--resume``) runs before the dataset is read.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import threading
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Le

from lucid_app.cli.types import bounded
from lucid_app.config import MAX_SEED, MAX_TIMESTEP

logger = logging.getLogger(__name__)

SIZES = (32, 64)
# The objective of a prior saved before it was a setting (format 1 without these keys): ε-prediction, unweighted.
LEGACY_SETTINGS = {"prediction": "epsilon", "snr_gamma": 0.0}
# learned_prior.objective.PREDICTIONS, without importing torch for the parser.
PREDICTIONS = ("epsilon", "v_prediction", "sample")
# Named limits of the flags: a week of wall-clock time, a million optimisation steps (the shipped prior took 1,416),
# batches that fit a large GPU at 64 px, and at most one DDIM step per training timestep for samples.png.
MINUTES = Annotated[float, Ge(0.0), Le(7 * 24 * 60.0)]
STEPS = Annotated[int, Ge(1), Le(1_000_000)]
SEED = Annotated[int, Ge(0), Le(MAX_SEED)]
BATCH_SIZE = Annotated[int, Ge(1), Le(4096)]
SAMPLE_STEPS = Annotated[int, Ge(0), Le(MAX_TIMESTEP + 1)]
SNR_GAMMA = Annotated[float, Ge(0.0), Le(1000.0)]


def add_train_prior_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train-prior`` on the CLI's sub-parsers."""
    parser = sub.add_parser("train-prior", help="train the learned miniature diffusion prior on a multi-view dataset")
    parser.add_argument("--dataset", default=None,
                        help="NeRF-synthetic dataset: one object folder or a folder of them (train split only; on "
                             "--resume, default: the dataset it was trained on)")
    parser.add_argument("--out", required=True, help="prior folder to write (then usable as --model PRIOR_DIR)")
    parser.add_argument("--size", type=int, choices=SIZES, default=None, help="pixel resolution R (default 32)")
    parser.add_argument("--minutes", type=bounded(MINUTES), default=None,
                        help="wall-clock limit of this session (default: 10 when --steps is not given, else none)")
    parser.add_argument("--steps", type=bounded(STEPS), default=None, help="total optimisation steps to reach")
    parser.add_argument("--seed", type=bounded(SEED), default=None, help="seed of every random draw (default 0)")
    parser.add_argument("--batch-size", type=bounded(BATCH_SIZE), default=None, help="images per step (default 32)")
    parser.add_argument("--prediction", choices=PREDICTIONS, default=None,
                        help="what the UNet predicts: noise, v or the clean image x0 (default v_prediction)")
    parser.add_argument("--snr-gamma", type=bounded(SNR_GAMMA), default=None,
                        help="min-SNR-gamma loss weighting, x0-space weight min(SNR, gamma) (default 0 = off)")
    parser.add_argument("--sample-steps", type=bounded(SAMPLE_STEPS), default=None,
                        help="DDIM steps of each samples.png image (default 50; 0 writes no samples.png)")
    parser.add_argument("--resume", action="store_true", help="continue the training saved in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a non-empty --out (only a prior's own files there are replaced)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.set_defaults(func=cmd_train_prior)


def _check_out(out: Path, resume: bool, overwrite: bool) -> tuple[list[Path], dict[str, Any] | None]:
    """(the prior files a fresh start replaces, the saved metadata on ``--resume``), checked before any work.

    Raises:
        OutputError / FileNotFoundError / PriorError: a folder that may not be written, nothing to resume.
    """
    from lucid_app.io.files import OutputError, check_output_dir
    from lucid_app.priors.learned_folder import (
        STATE_NAME,
        existing_prior_paths,
        read_metadata,
    )

    check_output_dir(out)
    if resume:
        if overwrite:
            raise ValueError("--overwrite starts a new prior in --out; --resume continues one: give one of them")
        if not (out / STATE_NAME).is_file():
            raise FileNotFoundError(f"--resume {out}: no {STATE_NAME} to continue from; start again with --overwrite")
        return [], read_metadata(out)
    if not out.is_dir() or not any(out.iterdir()):
        return [], None
    previous = existing_prior_paths(out)
    if overwrite:
        return previous, None
    if previous:
        raise OutputError(f"--out {out} already holds a learned prior: continue it with --resume, or start over "
                          "with --overwrite")
    raise OutputError(f"--out {out} is not empty: choose a new folder, or pass --overwrite to write into it "
                      "(only a prior's own files are ever replaced)")


def _settings(args: argparse.Namespace, saved: dict[str, Any] | None) -> Any:
    """The session's settings: flags, else (on ``--resume``) the saved ones, else the defaults. A flag that would
    change a saved setting (dataset captions are checked later) is refused."""
    from lucid_app.learned_prior.train import DEFAULT_MINUTES, TrainSettings

    kept = {**LEGACY_SETTINGS, **saved.get("settings", {})} if saved is not None else {}
    for flag, key in (("size", "size"), ("seed", "seed"), ("batch_size", "batch_size"), ("prediction", "prediction"),
                      ("snr_gamma", "snr_gamma")):
        value = getattr(args, flag)
        if saved is not None and value is not None and value != kept.get(key):
            raise ValueError(f"--resume: --{flag.replace('_', '-')} {value} differs from the prior's {kept.get(key)}")
        if value is not None:
            kept[key] = value
    dataset = args.dataset or kept.get("dataset")
    if not dataset:
        raise ValueError("train-prior needs --dataset DIR")
    minutes = args.minutes if args.minutes is not None or args.steps is not None else DEFAULT_MINUTES
    fields = set(TrainSettings.__dataclass_fields__) - {"dataset", "out", "steps", "minutes", "device"}
    kept = {key: value for key, value in kept.items() if key in fields}
    if args.sample_steps is not None:
        kept["sample_steps"] = args.sample_steps
    return TrainSettings(dataset=str(Path(dataset).expanduser().resolve()), out=str(Path(args.out).expanduser()),
                         steps=args.steps, minutes=minutes,
                         device=args.device, **kept)


def command_line(settings: Any, resume: bool) -> str:
    """The command that runs this session (recorded in ``lucid_prior.json``)."""
    words = ["python", "-m", "lucid_app", "train-prior", "--dataset", settings.dataset, "--out", settings.out,
             "--size", str(settings.size), "--seed", str(settings.seed), "--batch-size", str(settings.batch_size),
             "--prediction", settings.prediction, "--snr-gamma", f"{settings.snr_gamma:g}"]
    words += ["--steps", str(settings.steps)] if settings.steps is not None else []
    words += ["--minutes", f"{settings.minutes:g}"] if settings.minutes is not None else []
    return shlex.join(words + (["--resume"] if resume else []))


def cmd_train_prior(args: argparse.Namespace) -> dict[str, Any]:
    """Train or continue a learned prior; Ctrl-C / SIGTERM finish the batch, save, and exit with 130 / 143."""
    from lucid_app.config.devices import resolve_device
    from lucid_app.learned_prior.session import run_training
    from lucid_app.train.interrupts import StopOnSignal

    out = Path(args.out).expanduser()
    previous, saved = _check_out(out, args.resume, args.overwrite)
    args.device = str(resolve_device(args.device))
    settings = _settings(args, saved)
    stop = threading.Event()
    with StopOnSignal() as signals:
        signals.stop = stop.set
        result = run_training(settings, args.resume, previous, saved, command_line(settings, args.resume), stop)
    if signals.signum is not None:
        logger.warning("%s: training saved at step %d; continue it with --resume", signals.signal_name,
                       result["steps"])
    return {**result, "signal": signals.signal_name}
