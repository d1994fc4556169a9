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
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn

from annotated_types import Ge, Le

# Only light modules at the top: torch, the renderers, the trainer and the benchmarks load inside the commands that
# use them, so ``python -m lucid_app --help`` (and every parse error) starts in a fraction of a second. This module is
# the parser and the dispatch; each command's work is in its own module of this package (render, generate,
# inspector, batch, train_prior, bench).
from lucid_app.cli.add_user import add_add_user_parser
from lucid_app.cli.batch import add_batch_parser
from lucid_app.cli.generate import cmd_generate
from lucid_app.cli.inspector import cmd_inspect
from lucid_app.cli.render import cmd_mesh, cmd_render
from lucid_app.cli.types import bounded, bounded_list, field_bounds, positive_float, rgb_color
from lucid_app.config import (
    MAX_INSPECT_SEEDS,
    MAX_INSPECT_VALUES,
    MAX_TIMESTEP,
    AzimuthDeg,
    CameraConfig,
    ElevationDeg,
    ExportConfig,
    Length,
    RenderSize,
    Timestep,
)
from lucid_app.train.eta import DEFAULT_MAX_HOURS

logger = logging.getLogger("lucid_app")

# ``mesh --faces``: the mesher needs at least a tetrahedron's 4; the most is far above what a 512³ grid (the largest
# --resolution) gives, so it never binds a real mesh but keeps the value a size.
MESH_FACES = Annotated[int, Ge(4), Le(100_000_000)]
# ``inspect --t``: timestep indices of the 1000-step schedule (0 included, unlike δ_T).
TIMESTEP_INDEX = Annotated[int, Ge(0), Le(MAX_TIMESTEP)]

# ValueError covers bad device names and argument values found after parsing (ConfigError, PlyError and
# OutputError are ValueErrors too); OSError a file that cannot be read or written (missing, no permission, disk
# full); PriorError (see _user_errors) a model that cannot be loaded or used; ``--verbose`` logs the traceback of any
# of them.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
# ``mesh --texture`` without a size (issue 26); the end-of-run export's size is ``export.mesh_texture``.
MESH_COMMAND_TEXTURE_PX = 512


def _user_errors() -> tuple[type[BaseException], ...]:
    """:data:`USER_ERRORS` and ``PriorError`` once its module is loaded: importing it up front would load torch for
    every command, and no command can raise it before its module is loaded."""
    priors = sys.modules.get("lucid_app.priors.base")
    return USER_ERRORS if priors is None else (*USER_ERRORS, priors.PriorError)


def _add_allow_pickle(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-pickle", action="store_true",
                        help="also load pickle-format weights (.ckpt/.bin/.pt), which can run code when loaded: "
                             "only for files you trust (the default loads .safetensors only)")


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose arguments may be added when it is first used: ``populate(parser)`` runs before it
    parses or prints its help. Sub-command parsers are of this class too (``add_parser(..., populate=...)``), so a
    command whose arguments live in a heavy module costs ``python -m lucid_app --help`` nothing."""

    def __init__(self, *args: Any, populate: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _populated(self) -> None:
        populate, self._populate = self._populate, None
        if populate is not None:
            populate(self)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self._populated()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._populated()
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        """A bad argument is one line on stderr and exit status 2, as every user error of the CLI (argparse would
        print the whole usage, several lines for most commands, before it)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_render_parser(sub: argparse._SubParsersAction) -> None:
    export = ExportConfig()
    render = sub.add_parser("render", help="turntable .mp4 and PNG views of a 3DGS .ply")
    render.add_argument("--ply", required=True, help="INRIA-layout 3DGS .ply")
    render.add_argument("--out", required=True, help="output folder")
    # Every number is bounded by the config field it stands for (export.turntable_*, cameras.default_*).
    render.add_argument("--frames", type=bounded(field_bounds(ExportConfig, "turntable_frames")),
                        default=export.turntable_frames)
    render.add_argument("--fps", type=bounded(field_bounds(ExportConfig, "turntable_fps")),
                        default=export.turntable_fps)
    render.add_argument("--rings", type=bounded(field_bounds(ExportConfig, "turntable_rings")),
                        default=export.turntable_rings, help="orbits at 90°, 60°, ...")
    render.add_argument("--size", type=bounded(field_bounds(ExportConfig, "turntable_size")),
                        default=export.turntable_size, help="square frame size (px)")
    render.add_argument("--views", type=bounded(field_bounds(ExportConfig, "eval_views")), default=export.eval_views,
                        help="PNG views on a ring")
    render.add_argument("--radius", type=bounded(field_bounds(CameraConfig, "default_radius")), default=None,
                        help="camera distance (default: preview radius)")
    render.add_argument("--fovy", type=bounded(field_bounds(CameraConfig, "default_fovy_rad")), default=None,
                        help="vertical field of view in radians")
    render.add_argument("--background", type=rgb_color, default=(1.0, 1.0, 1.0))
    render.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    render.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat", "inria"])
    render.set_defaults(func=cmd_render)


def _add_generate_parser(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="text-to-3D: train a Gaussian splat from a prompt")
    gen.add_argument("--prompt", default=None, help="what to generate (default: the preset's prompt)")
    gen.add_argument("--negative", default=None, help="negative prompt (default: the preset's / the paper's)")
    gen.add_argument("--preset", default=None, help="preset name in presets/ or a YAML path")
    gen.add_argument("--model", default=None,
                     help="hub id, local diffusers folder, .safetensors file, multiview:DIR or a train-prior folder "
                          "(default: the preset's; with neither --model nor --preset, what this machine can finish: "
                          "Stable Diffusion with CUDA, else the offline demo; without weights the offline demo)")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config override, e.g. guidance.delta_t=50 (repeatable)")
    gen.add_argument("--out", default=None, help="run folder to write")
    gen.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its checkpoint")
    gen.add_argument("--overwrite", action="store_true",
                     help="start over in a non-empty --out: an earlier run's files there are removed, others kept")
    gen.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    gen.add_argument("--max-hours", type=positive_float, default=DEFAULT_MAX_HOURS,
                     help="refuse a run estimated to take longer than this, saying the estimate (default: "
                          f"{DEFAULT_MAX_HOURS:g}; estimated before loading for Stable Diffusion on a CPU, else from "
                          "the first steps)")
    gen.add_argument("--force", action="store_true", help="run even when the estimate exceeds --max-hours")
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


def _add_mesh_parser(sub: argparse._SubParsersAction) -> None:
    # Defaults (None) come from lucid_app.mesh when the command runs: importing it here would slow every --help.
    mesh = sub.add_parser("mesh", help="coloured surface mesh (.glb / .obj, y up) of a 3DGS .ply")
    mesh.add_argument("--ply", required=True, help="INRIA-layout 3DGS .ply")
    mesh.add_argument("--out", required=True, help="mesh file to write: .glb (vertex colours) or .obj")
    mesh.add_argument("--resolution", type=bounded(field_bounds(ExportConfig, "mesh_resolution")), default=None,
                      help="grid samples along the longest side (8-512; default: lucid_app.mesh's)")
    mesh.add_argument("--iso", type=bounded(field_bounds(ExportConfig, "mesh_iso")), default=None,
                      help="density level of the surface (default: lucid_app.mesh's)")
    mesh.add_argument("--faces", type=bounded(MESH_FACES), default=None,
                      help="at most this many faces (a coarser grid; the mesh stays watertight)")
    mesh.add_argument("--texture", type=int, nargs="?", const=MESH_COMMAND_TEXTURE_PX, default=None, metavar="SIZE",
                      help=f"bake a SIZE x SIZE px texture (16-8192; {MESH_COMMAND_TEXTURE_PX} without SIZE); "
                           ".obj also writes .mtl and .png beside it (default: vertex colours only)")
    mesh.add_argument("--bake", default=None, metavar="METHOD",
                      help="texture bake: normal (the Gaussians along each texel's normal; default) or views "
                           "(projected renders)")
    mesh.set_defaults(func=cmd_mesh)


def _add_bench_commands(bench_parser: argparse.ArgumentParser) -> None:
    """``bench``'s sub-commands: added when ``bench`` is used (:class:`_Parser`), as the benchmark modules import
    torch and the trainer."""
    from lucid_app.cli.bench import add_bench_commands

    add_bench_commands(bench_parser)


def _add_smpl_convert_arguments(parser: argparse.ArgumentParser) -> None:
    from lucid_app.avatar.smpl_convert import add_smpl_convert_arguments

    add_smpl_convert_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lucid_app", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_render_parser(sub)
    _add_generate_parser(sub)
    _add_mesh_parser(sub)
    sub.add_parser("bench", help="benchmarks that print one JSON object", populate=_add_bench_commands)

    insp = sub.add_parser("inspect", help="SDS, SDI and ISM pseudo-GTs of a .ply's views, and their inconsistency")
    insp.add_argument("--ply", required=True, help="INRIA-layout 3DGS .ply")
    insp.add_argument("--model", required=True, help="hub id, local diffusers folder or multiview:DIR")
    insp.add_argument("--prompt", required=True)
    insp.add_argument("--negative", default=None, help="negative prompt or @NAME (default: the paper's)")
    insp.add_argument("--t", type=bounded_list(TIMESTEP_INDEX, MAX_INSPECT_VALUES), default=(200, 500),
                      help="timestep indices, e.g. 200,500")
    insp.add_argument("--delta-t", type=bounded_list(Timestep, MAX_INSPECT_VALUES), default=(20, 200),
                      help="ISM intervals δ_T, e.g. 20,200")
    insp.add_argument("--seeds", type=bounded(Annotated[int, Ge(1), Le(MAX_INSPECT_SEEDS)]), default=3)
    insp.add_argument("--azimuth", type=bounded_list(AzimuthDeg, MAX_INSPECT_VALUES), default=(0.0,),
                      help="camera azimuths in degrees, comma-separated")
    insp.add_argument("--elevation", type=bounded(ElevationDeg), default=0.0, help="degrees above the horizon")
    insp.add_argument("--radius", type=bounded(Length), default=4.0)
    insp.add_argument("--size", type=bounded(RenderSize), default=64, help="render size (px)")
    insp.add_argument("--out", required=True, help="output folder (pseudo_gt.png)")
    insp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_allow_pickle(insp)
    insp.set_defaults(func=cmd_inspect)

    sub.add_parser("smpl-convert", populate=_add_smpl_convert_arguments,
                   help="convert the downloaded SMPL .pkl files once to the .npz files avatar mode reads")
    from lucid_app.cli.doctor import add_doctor_parser
    from lucid_app.cli.train_prior import add_train_prior_parser

    add_train_prior_parser(sub)
    add_doctor_parser(sub)
    add_batch_parser(sub)
    add_add_user_parser(sub)
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
    except _user_errors() as err:
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
