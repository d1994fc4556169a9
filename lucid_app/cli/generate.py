"""The ``generate`` command: text-to-3D training of a new run, an avatar run or a resumed one (DESIGN §6).

Its arguments are defined in :mod:`lucid_app.cli.main`; every check that needs no model (output folder, config,
checkpoint) runs before the model loads, and torch and the trainer load inside the command, so importing this module
costs ``python -m lucid_app --help`` nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid_app.io.run_layout import CHECKPOINT_NAME, CONFIG_NAME
from lucid_app.train.interrupts import StopOnSignal

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def _prior_loader(args: argparse.Namespace) -> Callable[[Any, torch.device], Any]:
    """``runs.load_run_prior``'s loader with the command's ``--allow-pickle`` choice (lucid_app.config.trust)."""
    from lucid_app.priors import load_prior

    return lambda model, device: load_prior(model.id, model, device, allow_pickle=args.allow_pickle)


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    """Text-to-3D: train Gaussians with ISM/SDS and write the run folder (DESIGN §6).

    The output folder is checked before any model is loaded: a new run never replaces an earlier one without
    ``--overwrite`` (which then removes only that run's files). Ctrl-C or SIGTERM end the run after its current
    step, export the last good state and exit with 130 / 143 after the JSON summary (``"signal"``).
    """
    from tqdm import tqdm

    from lucid_app.io.files import remove_files

    start = time.perf_counter()
    with StopOnSignal() as signals:
        trainer, notice, previous = _generate_trainer(args)
        if previous:
            logger.info("--overwrite: removing %d files of the earlier run in %s", len(previous), trainer.run_dir)
            remove_files(previous)
        signals.stop = trainer.request_stop
        config = trainer.config
        bar = tqdm(total=config.optim.steps, initial=trainer.step, desc="generate", unit="step", file=sys.stderr,
                   dynamic_ncols=True)

        first_step = [True]

        def on_event(event: object) -> None:
            from lucid_app.train.eta import eta_notice
            from lucid_app.train.events import StepEvent

            if isinstance(event, StepEvent):
                bar.update(1)
                bar.set_postfix(loss=f"{event.losses['total']:.3g}", t=int(event.t), gaussians=event.n_gaussians)
                if first_step[0]:
                    # After the first step: say plainly when the whole run would take hours (real SD on a CPU).
                    first_step[0] = False
                    slow = eta_notice(event.seconds, event.total_steps - event.step)
                    if slow:
                        logger.warning("%s", slow)

        try:
            done = trainer.run(on_event)
        finally:
            bar.close()
    if signals.signum is not None:
        logger.warning("%s: the run ended at step %d and its state was exported; continue it with --resume %s",
                       signals.signal_name, done.step, trainer.run_dir)
    logger.info("run %s: %s at step %d %s", done.status, trainer.run_dir, done.step, done.message)
    return {
        "command": "generate", "status": done.status, "message": done.message, "step": done.step,
        "steps": config.optim.steps, "prompt": config.prompt.text, "model": config.model.id,
        "method": config.guidance.method, "n_gaussians": trainer.gaussians.count, "files": done.files,
        "notice": notice, "signal": signals.signal_name, "wall_s": round(time.perf_counter() - start, 3),
    }


def _generate_trainer(args: argparse.Namespace) -> tuple[Any, str | None, list[Path]]:
    """The trainer of ``generate`` (a new run, or ``--resume``), its demo notice, and the files of an earlier run that
    ``--overwrite`` replaces (removed by the caller once everything loaded, so a failed start destroys nothing).

    Every check that needs no model (output folder, config, checkpoint) runs before the model loads.
    """
    from lucid_app.train.prepare import check_new_run_dir, load_run_prior, resolve_config
    from lucid_app.train.trainer import Trainer

    if args.resume:
        if args.overwrite:
            raise ValueError("--overwrite starts a new run in --out; --resume continues one: give one of them")
        return _resumed_trainer(args), None, []
    if args.out is None:
        raise ValueError("generate needs --out DIR (or --resume RUN_DIR)")
    _, previous = check_new_run_dir(args.out, args.overwrite)
    if args.avatar:
        trainer, notice = _avatar_trainer(args)
        return trainer, notice, previous
    config = resolve_config(args.preset, args.prompt, args.negative, args.model, args.set)
    # The user's own settings, which the offline demo applies on top of its preset if it stands in.
    overrides = [*args.set, *([f"prompt.negative={json.dumps(args.negative)}"] if args.negative is not None else [])]
    prepared = load_run_prior(config, args.device, allow_demo=args.model is None, overrides=overrides,
                              loader=_prior_loader(args))
    return Trainer(prepared.config, prepared.prior, run_dir=args.out), prepared.notice, previous


def _resumed_trainer(args: argparse.Namespace) -> Any:
    """``generate --resume RUN_DIR``: its config and checkpoint are read and checked before the model loads."""
    from lucid_app.config import from_yaml, replace
    from lucid_app.config.devices import resolve_device
    from lucid_app.io.checkpoints import load_checkpoint
    from lucid_app.io.files import check_output_dir
    from lucid_app.priors import load_prior
    from lucid_app.train.prepare import resolve_model_id
    from lucid_app.train.trainer import Trainer

    run_dir = Path(args.resume).expanduser()
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"--resume {args.resume}: not a run folder (no {CONFIG_NAME})")
    check_output_dir(run_dir, "--resume")
    saved = from_yaml(config_path.read_text(encoding="utf-8"))
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise FileNotFoundError(f"--resume {args.resume}: no {CHECKPOINT_NAME} to continue from; start the run again "
                                f"with --out {args.resume} --overwrite")
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    # Runs written before model paths were stored absolute hold them relative to some working folder.
    model = replace(saved.model, id=resolve_model_id(saved.model.id))
    prior = load_prior(model.id, model, resolve_device(args.device), allow_pickle=args.allow_pickle)
    return Trainer.resume(run_dir, prior, state=state)


def _avatar_trainer(args: argparse.Namespace) -> tuple[Any, None]:
    """Avatar mode: the flags become ``avatar.*`` overrides (so ``config.yaml`` records them and ``--resume`` keeps
    them); the trainer builds the body, its Gaussians and part-map control from the config."""
    from lucid_app.avatar import check_avatar
    from lucid_app.train.prepare import load_run_prior, resolve_config
    from lucid_app.train.trainer import Trainer

    flags = ["avatar.enabled=true"]
    for key, value in (("smpl_dir", args.smpl_dir), ("pose", args.pose), ("gender", args.gender)):
        if value is not None:
            flags.append(f"avatar.{key}={json.dumps(value)}")  # quoted: paths may hold ':' or '#'
    config = resolve_config(args.preset or "avatar", args.prompt, args.negative, args.model, [*flags, *args.set])
    check_avatar(config)
    prepared = load_run_prior(config, args.device, allow_demo=False, loader=_prior_loader(args))
    return Trainer(prepared.config, prepared.prior, run_dir=args.out), None
