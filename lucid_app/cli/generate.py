"""The ``generate`` command: text-to-3D training of a new run, an avatar run or a resumed one.

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
    """Text-to-3D: train Gaussians with ISM/SDS and write the run folder.

    With neither ``--model`` nor ``--preset`` it runs what this machine can finish: Stable Diffusion with CUDA, the
    offline demo without (:func:`~lucid_app.train.prepare.load_run_prior`'s ``machine_choice``), and says so in one
    line. A run estimated to take longer than ``--max-hours`` is refused unless ``--force``: before anything loads
    where a measured figure applies (Stable Diffusion on a CPU), else after its first steps (it then stops, exports
    what exists and exits with status 2). The output folder is checked before any model is loaded: a new run never
    replaces an earlier one without ``--overwrite`` (which then removes only that run's files). Ctrl-C or SIGTERM end
    the run after its current step, export the last good state and exit with 130 / 143 after the JSON summary
    (``"signal"``).
    """
    from tqdm import tqdm

    from lucid_app.io.files import remove_files
    from lucid_app.train.eta import ETA_SAMPLE_STEPS, eta_notice, measured_step_s, over_limit
    from lucid_app.train.events import StepEvent

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
        step_seconds: list[float] = []
        refused: list[str] = []

        def on_event(event: object) -> None:
            if not isinstance(event, StepEvent):
                return
            bar.update(1)
            bar.set_postfix(loss=f"{event.losses['total']:.3g}", t=int(event.t), gaussians=event.n_gaussians)
            step_seconds.append(event.seconds)
            if len(step_seconds) != ETA_SAMPLE_STEPS:
                return
            # Once, from the first steps: refuse a run over --max-hours, or say plainly that it takes hours.
            per_step = measured_step_s(step_seconds)
            remaining = event.total_steps - event.step
            refusal = over_limit(per_step * remaining, remaining, args.max_hours, "as its first steps took")
            if refusal and not args.force:
                refused.append(refusal)
                trainer.request_stop()
                return
            slow = eta_notice(per_step, remaining)
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
    result = {
        "command": "generate", "status": done.status, "message": done.message, "step": done.step,
        "steps": config.optim.steps, "prompt": config.prompt.text, "model": config.model.id,
        "method": config.guidance.method, "n_gaussians": trainer.gaussians.count, "files": done.files,
        "notice": notice, "signal": signals.signal_name, "wall_s": round(time.perf_counter() - start, 3),
    }
    if refused and signals.signum is None:
        result.update(status="refused", refusal=refused[0], exit_status=2)
        logger.error("%s; stopped at step %d, its state exported: --resume %s --force continues it", refused[0],
                     done.step, trainer.run_dir)
    return result


def _generate_trainer(args: argparse.Namespace) -> tuple[Any, str | None, list[Path]]:
    """The trainer of ``generate`` (a new run, or ``--resume``), its demo notice, and the files of an earlier run that
    ``--overwrite`` replaces (removed by the caller once everything loaded, so a failed start destroys nothing).

    Every check that needs no model (output folder, config, checkpoint, the run-time estimate where one applies)
    runs before the model loads.
    """
    from lucid_app.config import DEFAULT_MODEL
    from lucid_app.config.devices import resolve_device
    from lucid_app.config.trust import check_weights
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
    device = resolve_device(args.device)
    machine_choice = args.model is None and args.preset is None
    # A weight file that may not be loaded (a pickle, or not safetensors by its content) is the first thing to say.
    check_weights(config.model, allow_pickle=getattr(args, "allow_pickle", False))
    if not (machine_choice and device.type != "cuda" and config.model.id == DEFAULT_MODEL):
        _check_estimate(config, device.type, config.optim.steps, args)
    # The user's own settings, which the offline demo applies on top of its preset if it stands in.
    overrides = [*args.set, *([f"prompt.negative={json.dumps(args.negative)}"] if args.negative is not None else [])]
    prepared = load_run_prior(config, device, allow_demo=args.model is None, overrides=overrides,
                              loader=_prior_loader(args), machine_choice=machine_choice)
    return Trainer(prepared.config, prepared.prior, run_dir=args.out), prepared.notice, previous


def _check_estimate(config: Any, device_type: str, steps: int, args: argparse.Namespace) -> None:
    """Refuse, before anything loads, a run of ``steps`` steps estimated over ``--max-hours`` (unless ``--force``).

    Raises:
        ValueError: the refusal, with the estimate and the ways out.
    """
    from lucid_app.train.eta import estimate_run_s, over_limit
    from lucid_app.train.prepare import weights_available

    estimate = estimate_run_s(config, device_type)
    if estimate is None or args.force or not weights_available(config.model.id):
        return
    refusal = over_limit(estimate * steps / config.optim.steps, steps, args.max_hours,
                         "estimated from the CPU step time in docs/BENCHMARKS.md")
    if refusal:
        raise ValueError(refusal)


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
    device = resolve_device(args.device)
    _check_estimate(saved, device.type, saved.optim.steps - int(state["step"]), args)
    # Runs written before model paths were stored absolute hold them relative to some working folder.
    model = replace(saved.model, id=resolve_model_id(saved.model.id))
    prior = load_prior(model.id, model, device, allow_pickle=args.allow_pickle)
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
