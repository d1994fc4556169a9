"""Command line: ``python -m lucid_app COMMAND ...``.

Every command that reports figures prints one JSON object as the last line of stdout; progress bars and logs
go to stderr. User errors (bad config, missing or corrupt files, missing models, outputs that cannot be written
or would replace a run) end with one clear message and exit status 2, never a stack trace; outputs are checked
before any model loads. Ctrl-C / SIGTERM exit with 130 / 143 (``generate`` exports and reports first).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lucid_app.batch import add_batch_parser
from lucid_app.bench_quality import add_quality_parser
from lucid_app.bench_step import add_step_parser
from lucid_app.cameras import orbit_cameras, turntable, turntable_rings
from lucid_app.cli_types import positive_int as _positive_int
from lucid_app.config import CameraConfig, ExportConfig, OptimConfig
from lucid_app.devices import resolve_device
from lucid_app.export import check_output_dir, check_output_file, render_frames, write_png, write_turntable
from lucid_app.gaussians import GaussianModel
from lucid_app.ply import read_gaussian_ply
from lucid_app.priors.base import PriorError
from lucid_app.render import make_renderer
from lucid_app.run_layout import CHECKPOINT_NAME, CONFIG_NAME, TURNTABLE_NAME, view_file
from lucid_app.signals import StopOnSignal

logger = logging.getLogger("lucid_app")

# ValueError covers bad device names and argument values found after parsing (ConfigError, PlyError and
# OutputError are ValueErrors too); OSError a file that cannot be read or written (missing, no permission, disk
# full); ``--verbose`` logs the traceback of any of them.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, PriorError, OSError)


def _parse_color(text: str) -> tuple[float, float, float]:
    named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5), "gray": (0.5, 0.5, 0.5)}
    if text.lower() in named:
        return named[text.lower()]
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"background must be white, black, grey or 'r,g,b' in [0, 1], got {text!r}")
    return values  # type: ignore[return-value]


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False)


def cmd_render(args: argparse.Namespace) -> dict[str, Any]:
    """Turntable ``.mp4`` and a ring of PNG views of any INRIA-layout ``.ply``."""
    start = time.perf_counter()
    out = check_output_dir(args.out)
    device = resolve_device(args.device)
    data = read_gaussian_ply(args.ply)
    splats = GaussianModel.from_raw(data, OptimConfig(), device=device).splats()
    renderer = make_renderer(args.backend, device)
    out.mkdir(parents=True, exist_ok=True)
    cams = CameraConfig()
    radius = args.radius if args.radius is not None else cams.default_radius
    fovy = args.fovy if args.fovy is not None else cams.default_fovy_rad

    path = turntable(args.frames, args.size, args.size, radius, fovy, turntable_rings(args.rings, cams.default_polar_deg))
    with _progress(args.frames, "turntable") as bar:
        frames = write_turntable(out / TURNTABLE_NAME, renderer, splats, path, args.fps, args.background, bar.update)

    n_views = args.views
    azimuth = torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    views = orbit_cameras(
        azimuth, torch.full((n_views,), cams.default_polar_deg), torch.full((n_views,), float(radius)),
        torch.full((n_views,), float(fovy)), args.size, args.size,
    )
    written = []
    for i, image in enumerate(render_frames(renderer, splats, views, args.background)):
        written.append(str(write_png(out / view_file(i), image)))
    return {
        "command": "render",
        "ply": str(args.ply),
        "n_gaussians": data.count,
        "sh_degree": data.sh_degree,
        "renderer": renderer.name,
        "frames": frames,
        "video": str(out / TURNTABLE_NAME),
        "views": written,
        "wall_s": round(time.perf_counter() - start, 3),
    }


def _add_allow_pickle(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-pickle", action="store_true",
                        help="also load pickle-format weights (.ckpt/.bin/.pt), which can run code when loaded: "
                             "only for files you trust (the default loads .safetensors only)")


def _prior_loader(args: argparse.Namespace) -> Callable[[Any, torch.device], Any]:
    """``runs.load_run_prior``'s loader with the command's ``--allow-pickle`` choice (lucid_app.trust)."""
    from lucid_app.priors import load_prior

    return lambda model, device: load_prior(model.id, model, device, allow_pickle=args.allow_pickle)


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    """Text-to-3D: train Gaussians with ISM/SDS and write the run folder (DESIGN §6).

    The output folder is checked before any model is loaded: a new run never replaces an earlier one without
    ``--overwrite`` (which then removes only that run's files). Ctrl-C or SIGTERM end the run after its current
    step, export the last good state and exit with 130 / 143 after the JSON summary (``"signal"``).
    """
    from lucid_app.export import remove_files

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
            from lucid_app.eta import eta_notice
            from lucid_app.events import StepEvent

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
    from lucid_app.runs import check_new_run_dir, load_run_prior, resolve_config
    from lucid_app.trainer import Trainer

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
    from lucid_app.export import load_checkpoint
    from lucid_app.priors import load_prior
    from lucid_app.runs import resolve_model_id
    from lucid_app.trainer import Trainer

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
    from lucid_app.runs import load_run_prior, resolve_config
    from lucid_app.trainer import Trainer

    flags = ["avatar.enabled=true"]
    for key, value in (("smpl_dir", args.smpl_dir), ("pose", args.pose), ("gender", args.gender)):
        if value is not None:
            flags.append(f"avatar.{key}={json.dumps(value)}")  # quoted: paths may hold ':' or '#'
    config = resolve_config(args.preset or "avatar", args.prompt, args.negative, args.model, [*flags, *args.set])
    check_avatar(config)
    prepared = load_run_prior(config, args.device, allow_demo=False, loader=_prior_loader(args))
    return Trainer(prepared.config, prepared.prior, run_dir=args.out), None


def cmd_mesh(args: argparse.Namespace) -> dict[str, Any]:
    """Surface mesh (``.glb`` / ``.obj``, y up, vertex colours) of any INRIA-layout ``.ply``."""
    from lucid_app.mesh import DEFAULT_ISO, DEFAULT_RESOLUTION, MESH_FORMATS, MeshError, mesh_from_splats, write_mesh

    start = time.perf_counter()
    iso = DEFAULT_ISO if args.iso is None else args.iso
    out = check_output_file(args.out)
    if out.suffix.lower() not in MESH_FORMATS:
        raise MeshError(f"--out {out}: the mesh format must be one of {', '.join(MESH_FORMATS)}, "
                        f"got {out.suffix or 'none'}")
    data = read_gaussian_ply(args.ply)
    splats = GaussianModel.from_raw(data, OptimConfig()).splats()
    with tqdm(total=data.count, desc="mesh density", unit="gaussian", file=sys.stderr, dynamic_ncols=True,
              leave=False) as bar:
        result = mesh_from_splats(splats, resolution=args.resolution or DEFAULT_RESOLUTION, iso=iso,
                                  max_faces=args.faces, progress=bar.update)
    path = write_mesh(out, result.mesh)
    return {
        "command": "mesh", "ply": str(args.ply), "n_gaussians": data.count, "resolution": result.resolution,
        "iso": iso, "vertices": len(result.mesh.vertices), "faces": len(result.mesh.faces),
        "watertight": bool(result.mesh.is_watertight),
        "components_kept": result.components_kept, "components_found": result.components_found,
        "path": str(path), "wall_s": round(time.perf_counter() - start, 3),
    }


def cmd_bench_distill2d(args: argparse.Namespace) -> dict[str, Any]:
    """The fastest end-to-end check of the guidance: distil a free image from a multi-view prior."""
    from lucid_app.bench_distill2d import distill2d
    from lucid_app.config import GuidanceConfig, ModelConfig

    guidance = GuidanceConfig(lambda_guidance=args.lambda_guidance, warmup_steps=args.warmup_steps)
    model_config = ModelConfig(
        multiview_resolution=args.resolution, multiview_kernel=args.kernel, multiview_keep_t=args.keep_t,
        multiview_sigma=args.sigma,
    )
    return distill2d(
        args.model, args.prompt, args.method, args.steps, args.seed, lr=args.lr, guidance=guidance,
        model_config=model_config, device=resolve_device(args.device),
    )


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return values


def cmd_inspect(args: argparse.Namespace) -> dict[str, Any]:
    """Pseudo-GTs of SDS and ISM for views of a ``.ply`` (``lucid_app.inspect``); writes OUT/pseudo_gt.png."""
    from lucid_app.config import ModelConfig, PromptConfig
    from lucid_app.inspect import (
        InspectSettings,
        inspect_pseudo_gt,
        label_grid,
        orbit_views,
        prior_control,
        render_ply_cameras,
    )
    from lucid_app.negatives import negative_text
    from lucid_app.priors import load_prior
    from lucid_app.runs import resolve_model_id

    start = time.perf_counter()
    check_output_dir(args.out)
    device = resolve_device(args.device)
    model_id = resolve_model_id(args.model)
    prior = load_prior(model_id, ModelConfig(id=model_id), device, allow_pickle=args.allow_pickle)
    azimuth = torch.tensor([float(a) for a in args.azimuth.split(",")])
    cameras = orbit_views(azimuth, args.elevation, args.radius, args.size, CameraConfig().default_fovy_rad)
    renders = render_ply_cameras(args.ply, cameras, device)
    prompt = PromptConfig(text=args.prompt) if args.negative is None else PromptConfig(
        text=args.prompt, negative=negative_text(args.negative))
    settings = InspectSettings(timesteps=args.t, delta_ts=args.delta_t, seeds=args.seeds)
    grid, numbers = inspect_pseudo_gt(prior, renders, azimuth, prompt, settings=settings,
                                      control=prior_control(prior, cameras))
    title = f"{prompt.text} | negative: {prompt.negative[:40] or '(none)'}"
    labelled = label_grid(grid.cpu().numpy(), list(numbers), len(cameras), settings.seeds, title)
    png = write_png(Path(args.out) / "pseudo_gt.png", labelled)
    return {
        "command": "inspect", "ply": str(args.ply), "model": model_id, "prompt": prompt.text,
        "negative": prompt.negative, "t": list(args.t), "delta_t": list(args.delta_t), "seeds": args.seeds,
        "azimuth_deg": azimuth.tolist(), "rows": list(numbers), "inconsistency": numbers, "png": str(png),
        "wall_s": round(time.perf_counter() - start, 3),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lucid_app", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    export = ExportConfig()
    render = sub.add_parser("render", help="turntable .mp4 and PNG views of a 3DGS .ply")
    render.add_argument("--ply", required=True, help="INRIA-layout 3DGS .ply")
    render.add_argument("--out", required=True, help="output folder")
    render.add_argument("--frames", type=_positive_int, default=export.turntable_frames)
    render.add_argument("--fps", type=_positive_int, default=export.turntable_fps)
    render.add_argument("--rings", type=_positive_int, default=export.turntable_rings, help="orbits at 90°, 60°, ...")
    render.add_argument("--size", type=_positive_int, default=export.turntable_size, help="square frame size (px)")
    render.add_argument("--views", type=_positive_int, default=export.eval_views, help="PNG views on a ring")
    render.add_argument("--radius", type=float, default=None, help="camera distance (default: preview radius)")
    render.add_argument("--fovy", type=float, default=None, help="vertical field of view in radians")
    render.add_argument("--background", type=_parse_color, default=(1.0, 1.0, 1.0))
    render.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    render.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat", "inria"])
    render.set_defaults(func=cmd_render)

    gen = sub.add_parser("generate", help="text-to-3D: train a Gaussian splat from a prompt")
    gen.add_argument("--prompt", default=None, help="what to generate (default: the preset's prompt)")
    gen.add_argument("--negative", default=None, help="negative prompt (default: the preset's / the paper's)")
    gen.add_argument("--preset", default=None, help="preset name in presets/ or a YAML path")
    gen.add_argument("--model", default=None,
                     help="hub id, local diffusers folder, .safetensors file or multiview:DIR (default: the preset's; "
                          "without weights the offline demo runs instead)")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config override, e.g. guidance.delta_t=50 (repeatable)")
    gen.add_argument("--out", default=None, help="run folder to write")
    gen.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its checkpoint")
    gen.add_argument("--overwrite", action="store_true",
                     help="start over in a non-empty --out: an earlier run's files there are removed, others kept")
    gen.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_allow_pickle(gen)
    gen.add_argument("--avatar", action="store_true",
                     help="avatar mode: start from a posed SMPL body, guide with a body-part ControlNet")
    gen.add_argument("--pose", default=None,
                     help="avatar pose preset (presets/poses/) or a .npz/.json file (sets avatar.pose; default a_pose)")
    gen.add_argument("--smpl-dir", default=None,
                     help="folder of SMPL_<GENDER>.npz written by smpl-convert (sets avatar.smpl_dir)")
    gen.add_argument("--gender", default=None, choices=["neutral", "male", "female"],
                     help="SMPL model (sets avatar.gender; default neutral)")
    gen.set_defaults(func=cmd_generate)

    # Defaults (None) come from lucid_app.mesh when the command runs: importing it here would slow every --help.
    mesh = sub.add_parser("mesh", help="coloured surface mesh (.glb / .obj, y up) of a 3DGS .ply")
    mesh.add_argument("--ply", required=True, help="INRIA-layout 3DGS .ply")
    mesh.add_argument("--out", required=True, help="mesh file to write: .glb (vertex colours) or .obj")
    mesh.add_argument("--resolution", type=_positive_int, default=None,
                      help="grid samples along the longest side (8-512; default: lucid_app.mesh's)")
    mesh.add_argument("--iso", type=float, default=None,
                      help="density level of the surface (default: lucid_app.mesh's)")
    mesh.add_argument("--faces", type=_positive_int, default=None,
                      help="at most this many faces (a coarser grid; the mesh stays watertight)")
    mesh.set_defaults(func=cmd_mesh)

    bench = sub.add_parser("bench", help="benchmarks that print one JSON object").add_subparsers(
        dest="bench", required=True
    )
    d2 = bench.add_parser("distill2d", help="optimise a free image with ISM or SDS; PSNR to the dataset")
    d2.add_argument("--model", required=True, help="multiview:DIR")
    d2.add_argument("--prompt", default="", help="caption of the object to distil ('' = any)")
    d2.add_argument("--method", choices=["ism", "sds", "naive"], default="ism")
    d2.add_argument("--steps", type=_positive_int, default=500)
    d2.add_argument("--seed", type=int, default=0)
    d2.add_argument("--lr", type=float, default=0.02, help="Adam learning rate on the pixels")
    d2.add_argument("--lambda-guidance", type=float, default=1.0, help="λ of the guidance gradient")
    d2.add_argument("--warmup-steps", type=int, default=0,
                    help="guidance warm-up (t range and δ_T annealing); 0 as in the demo preset")
    d2.add_argument("--resolution", type=_positive_int, default=64, help="prior resolution (px)")
    d2.add_argument("--kernel", choices=["snr", "constant"], default="snr", help="multi-view prior kernel")
    d2.add_argument("--keep-t", type=int, default=450, help="'snr' kernel: t at which half the input is kept")
    d2.add_argument("--sigma", type=float, default=0.1, help="'constant' kernel: its width σ")
    d2.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d2.set_defaults(func=cmd_bench_distill2d)
    add_quality_parser(bench)
    add_step_parser(bench)

    insp = sub.add_parser("inspect", help="SDS vs ISM pseudo-GTs of a .ply's views, and their inconsistency")
    insp.add_argument("--ply", required=True, help="INRIA-layout 3DGS .ply")
    insp.add_argument("--model", required=True, help="hub id, local diffusers folder or multiview:DIR")
    insp.add_argument("--prompt", required=True)
    insp.add_argument("--negative", default=None, help="negative prompt or @NAME (default: the paper's)")
    insp.add_argument("--t", type=_int_list, default=(200, 500), help="timestep indices, e.g. 200,500")
    insp.add_argument("--delta-t", type=_int_list, default=(20, 200), help="ISM intervals δ_T, e.g. 20,200")
    insp.add_argument("--seeds", type=_positive_int, default=3)
    insp.add_argument("--azimuth", default="0", help="camera azimuths in degrees, comma-separated")
    insp.add_argument("--elevation", type=float, default=0.0, help="degrees above the horizon")
    insp.add_argument("--radius", type=float, default=4.0)
    insp.add_argument("--size", type=_positive_int, default=64, help="render size (px)")
    insp.add_argument("--out", required=True, help="output folder (pseudo_gt.png)")
    insp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_allow_pickle(insp)
    insp.set_defaults(func=cmd_inspect)

    from lucid_app.avatar.smpl_convert import add_smpl_convert_parser

    add_smpl_convert_parser(sub)
    add_batch_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    func: Callable[[argparse.Namespace], dict[str, Any]] = args.func
    try:
        result = func(args)
    except USER_ERRORS as err:
        logger.debug("user error", exc_info=True)
        print(f"error: {_error_text(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print("interrupted: files already written are complete", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)
    print(json.dumps(result))
    # A run that a signal ended still exports and reports, then exits as interrupted commands do.
    return 128 + signal.Signals[result["signal"]] if result.get("signal") else int(result.get("exit_status", 0))


def _error_text(err: BaseException) -> str:
    """The message of a user error; an OSError from the system as "reason: path", without its ``[Errno N]``."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err)
