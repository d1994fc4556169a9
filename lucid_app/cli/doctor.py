"""``python -m lucid_app doctor``: will ISM (SDS, SDI) work on this model? (:mod:`lucid_app.lab.doctor`)

Importing this module is cheap (argparse only): torch, the prior and the measurement load when the command runs.
Every check that needs no model (methods, timesteps, the output folder, the config) runs before the model loads.

The guidance settings (CFG scale, λ, δ_T, inversions, negative prompt) come from a preset, resolved as ``generate``
resolves them (``runs.resolve_config``: preset ← ``--set`` ← ``--prompt`` / ``--model``). Default preset: the one a
user trains with on that kind of model — ``learned_demo`` for a ``train-prior`` folder, ``demo`` for
``multiview:DIR``, ``paper`` for anything else (Stable Diffusion).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Gt, Le

from lucid_app.cli.types import bounded, bounded_list
from lucid_app.config import MAX_TIMESTEP
from lucid_app.lab.doctor.defaults import (
    DEFAULT_AMPLITUDE,
    DEFAULT_SEEDS,
    DEFAULT_TIMESTEPS,
    DEFAULT_VIEWS,
    METHODS,
)

# Bounds of the flags: the timesteps are checked against the prior's own schedule once it is loaded (1 .. T-1).
TIMESTEP = Annotated[int, Ge(0), Le(MAX_TIMESTEP + 1)]
MAX_TIMESTEPS = 16
SEEDS = Annotated[int, Ge(1), Le(64)]
VIEWS = Annotated[int, Ge(1), Le(64)]
AMPLITUDE = Annotated[float, Gt(0.0), Le(10.0)]
JSON_NAME = "doctor.json"
PLOT_NAME = "doctor.svg"


def _method_list(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown or text!r}; valid: {', '.join(METHODS)}")
    return methods


def add_doctor_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``doctor`` on the CLI's sub-parsers."""
    parser = sub.add_parser("doctor", help="restoring coefficient of ISM, SDS and SDI on a model: will it converge?")
    parser.add_argument("--model", required=True,
                        help="train-prior folder, multiview:DIR, diffusers folder, .safetensors file or hub id")
    parser.add_argument("--prompt", required=True, help="the prompt (with --dataset: selects the object)")
    parser.add_argument("--dataset", default=None, metavar="DIR",
                        help="perturb the captioned object's test views (default: the prior's own samples)")
    parser.add_argument("--t", type=bounded_list(TIMESTEP, MAX_TIMESTEPS), default=DEFAULT_TIMESTEPS,
                        help="timestep indices, e.g. 100,300,450")
    parser.add_argument("--methods", type=_method_list, default=METHODS, help="e.g. ism,sds,sdi")
    parser.add_argument("--seeds", type=bounded(SEEDS), default=DEFAULT_SEEDS, help="noise seeds per measurement")
    parser.add_argument("--views", type=bounded(VIEWS), default=DEFAULT_VIEWS, help="reference views")
    parser.add_argument("--amplitude", type=bounded(AMPLITUDE), default=DEFAULT_AMPLITUDE,
                        help="RMS of each perturbation per view, in x0 units")
    parser.add_argument("--out", default=None, help="folder for doctor.json and doctor.svg")
    parser.add_argument("--preset", default=None,
                        help="guidance settings (default: learned_demo / demo / paper by the kind of model)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. guidance.guidance_scale=5 (repeatable)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--allow-pickle", action="store_true",
                        help="also load pickle-format weights (only for files you trust)")
    parser.set_defaults(func=cmd_doctor)


def default_preset(model: str) -> str:
    """``learned_demo`` for a train-prior folder, ``demo`` for ``multiview:DIR``, else ``paper``."""
    from lucid_app.lab.doctor.defaults import preset_for_kind
    from lucid_app.priors.model_ref import parse_model_ref

    return preset_for_kind(parse_model_ref(model).kind)


def _checked_out(out: str | None) -> Path | None:
    from lucid_app.io.files import check_output_dir

    return None if out is None else check_output_dir(out)


def cmd_doctor(args: argparse.Namespace) -> dict[str, Any]:
    """Measure, print the table on stderr, write ``doctor.json`` and ``doctor.svg`` with ``--out``; the summary."""
    start = time.perf_counter()
    if any(t < 1 for t in args.t):
        raise ValueError(f"--t: timesteps must be >= 1, got {list(args.t)}")
    out = _checked_out(args.out)

    from tqdm import tqdm

    from lucid_app.config.devices import resolve_device
    from lucid_app.lab.doctor.measure import DoctorSettings
    from lucid_app.lab.doctor.report import doctor_svg, table_text
    from lucid_app.lab.doctor.run import diagnose
    from lucid_app.lab.doctor.verdicts import remember
    from lucid_app.priors import load_prior
    from lucid_app.train.prepare import resolve_config

    preset = args.preset or default_preset(args.model)
    config = resolve_config(preset, prompt=args.prompt, model=args.model, overrides=args.set)
    settings = DoctorSettings(timesteps=tuple(args.t), methods=tuple(args.methods), seeds=args.seeds,
                              amplitude=args.amplitude)
    prior = load_prior(config.model.id, config.model, resolve_device(args.device), allow_pickle=args.allow_pickle)
    with tqdm(total=settings.evaluations, desc="doctor", unit="call", file=sys.stderr, dynamic_ncols=True) as bar:
        result = diagnose(prior, config, settings, args.dataset, args.views,
                          progress=lambda done, total: bar.update(done - bar.n))
    result = {"command": "doctor", "model": args.model, "preset": preset, **result}
    remember(config.model.id, result)
    print(table_text(result), file=sys.stderr)
    result["files"] = [] if out is None else [str(out / JSON_NAME), str(out / PLOT_NAME)]
    result["seconds"] = round(time.perf_counter() - start, 3)
    if out is not None:
        _write(out, result, doctor_svg(result))
    return result


def _write(out: Path, result: dict[str, Any], svg: str) -> None:
    """``doctor.svg`` then ``doctor.json`` (atomic writes) in ``out``."""
    import json

    from lucid_app.io.files import write_text

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / PLOT_NAME, svg)
    write_text(out / JSON_NAME, json.dumps(result, indent=1) + "\n")
