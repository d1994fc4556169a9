"""The ``bench`` command's sub-commands: ``quality`` (:mod:`lucid_app.bench.quality`), ``step``
(:mod:`lucid_app.bench.step`) and ``distill2d`` (:mod:`lucid_app.bench.distill2d`): their arguments, and each one's
run with a progress bar on stderr. Imported only when ``bench`` is used: the benchmarks import torch and the trainer.
"""

from __future__ import annotations

import argparse
import sys
from typing import Annotated, Any

from annotated_types import Ge, Le

from lucid_app.bench.distill2d import distill2d
from lucid_app.bench.quality import DEFAULT_DATASET, DEMO_PRESET, METHODS, ORACLE, quality
from lucid_app.bench.step import bench_step
from lucid_app.cli.types import bounded, field_bounds
from lucid_app.config import (
    MAX_BATCH_SIZE,
    MAX_POINTS,
    MAX_SEED,
    MAX_STEPS,
    GuidanceConfig,
    LearningRate,
    ModelConfig,
    RenderSize,
    StepIndex,
    Steps,
    Weight,
)
from lucid_app.config.devices import resolve_device
from lucid_app.guidance import GUIDANCES
from lucid_app.train.events import StepEvent

# Every size, count and rate is bounded by the config's own limits (the field each flag stands for).
SEED = Annotated[int, Ge(0), Le(MAX_SEED)]


def add_bench_commands(bench_parser: argparse.ArgumentParser) -> None:
    """``bench``'s sub-commands (added when ``bench`` is used, see :mod:`lucid_app.cli.main`)."""
    bench = bench_parser.add_subparsers(dest="bench", required=True)
    add_distill2d_parser(bench)
    add_quality_parser(bench)
    add_step_parser(bench)


def add_distill2d_parser(bench_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``distill2d`` to the ``bench`` sub-commands; its ``func`` is :func:`cmd_bench_distill2d`."""
    d2 = bench_subparsers.add_parser("distill2d", help="optimise a free image with ISM or SDS; PSNR to the dataset")
    d2.add_argument("--model", required=True, help="multiview:DIR")
    d2.add_argument("--prompt", default="", help="caption of the object to distil ('' = any)")
    d2.add_argument("--method", choices=sorted(GUIDANCES), default="ism")
    d2.add_argument("--steps", type=bounded(Steps), default=500)
    d2.add_argument("--seed", type=bounded(SEED), default=0)
    d2.add_argument("--lr", type=bounded(LearningRate), default=0.02, help="Adam learning rate on the pixels")
    d2.add_argument("--lambda-guidance", type=bounded(Weight), default=1.0, help="λ of the guidance gradient")
    d2.add_argument("--warmup-steps", type=bounded(StepIndex), default=0,
                    help="guidance warm-up (t range and δ_T annealing); 0 as in the demo preset")
    d2.add_argument("--resolution", type=bounded(field_bounds(ModelConfig, "multiview_resolution")), default=64,
                    help="prior resolution (px)")
    d2.add_argument("--kernel", choices=["snr", "constant"], default="snr", help="multi-view prior kernel")
    d2.add_argument("--keep-t", type=bounded(field_bounds(ModelConfig, "multiview_keep_t")), default=450,
                    help="'snr' kernel: t at which half the input is kept")
    d2.add_argument("--sigma", type=bounded(field_bounds(ModelConfig, "multiview_sigma")), default=0.1,
                    help="'constant' kernel: its width σ")
    d2.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d2.set_defaults(func=cmd_bench_distill2d)
    return d2


def cmd_bench_distill2d(args: argparse.Namespace) -> dict[str, Any]:
    """The fastest end-to-end check of the guidance: distil a free image from a multi-view prior."""
    guidance = GuidanceConfig(lambda_guidance=args.lambda_guidance, warmup_steps=args.warmup_steps)
    model_config = ModelConfig(
        multiview_resolution=args.resolution, multiview_kernel=args.kernel, multiview_keep_t=args.keep_t,
        multiview_sigma=args.sigma,
    )
    return distill2d(
        args.model, args.prompt, args.method, args.steps, args.seed, lr=args.lr, guidance=guidance,
        model_config=model_config, device=resolve_device(args.device),
    )


def _step_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not 1 <= v <= MAX_STEPS for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated steps from 1 to {MAX_STEPS} like 250,500,1000, "
                                         f"got {text!r}")
    return values


def add_quality_parser(bench_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``quality`` to the ``bench`` sub-commands; its ``func`` is :func:`cmd_bench_quality`."""
    parser = bench_subparsers.add_parser(
        "quality", help="train the demo preset with a guidance or the supervised oracle; PSNR/SSIM on the object's "
                        "held-out test views"
    )
    parser.add_argument("--dataset", default=DEFAULT_DATASET, metavar="DIR", help="multi-view dataset folder")
    parser.add_argument("--model", default=None, metavar="PRIOR",
                        help="prior: learned-prior or diffusers folder, hub id or multiview:DIR (default: "
                             "multiview: + the dataset); the object and its views always come from --dataset")
    parser.add_argument("--prompt", default=None, help="caption of the object (default: the first object's)")
    parser.add_argument("--method", choices=METHODS, default="ism",
                        help="a guidance, or 'oracle': supervised fit of the train views (the ceiling)")
    parser.add_argument("--with-oracle", action="store_true",
                        help="also run the oracle (same seed and steps): oracle_psnr, oracle_ssim, oracle_fraction")
    parser.add_argument("--steps", type=bounded(Steps), default=1000)
    parser.add_argument("--seed", type=bounded(SEED), default=0)
    parser.add_argument("--eval-steps", type=_step_list, default=None, metavar="N,N,...",
                        help="steps to evaluate at (default 250,500,1000,2000 up to --steps; the last is added)")
    parser.add_argument("--preset", default=DEMO_PRESET,
                        help="preset trained (default demo; e.g. learned_demo); the dataset's camera band and --set "
                             "apply on top")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override on the preset, e.g. guidance.lambda_guidance=1 (repeatable)")
    parser.add_argument("--no-doctor", action="store_true",
                        help="skip the prior doctor's restoring coefficient of the method (reported as \"doctor\")")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.set_defaults(func=cmd_bench_quality)
    return parser


def cmd_bench_quality(args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`quality` from parsed arguments with a progress bar on stderr."""
    from tqdm import tqdm

    runs = 2 if args.with_oracle and args.method != ORACLE else 1
    desc = f"quality {args.method}" + (f" + {ORACLE}" if runs == 2 else "")
    with tqdm(total=args.steps * runs, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True) as bar:

        def on_step(event: StepEvent) -> None:
            bar.update(1)
            bar.set_postfix(gaussians=event.n_gaussians, refresh=False)

        return quality(args.dataset, args.prompt, args.method, args.steps, args.seed, args.eval_steps, args.set,
                       args.device, on_step=on_step, model=args.model, with_oracle=args.with_oracle,
                       preset=args.preset, with_doctor=not args.no_doctor)


def add_step_parser(bench_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``step`` to the ``bench`` sub-commands; its ``func`` is :func:`cmd_bench_step`."""
    parser = bench_subparsers.add_parser(
        "step", help="time and memory of training steps at SD 2.1 base's full size (random weights, no download)"
    )
    parser.add_argument("--arch", choices=["sd21-base", "mini"], default="sd21-base")
    parser.add_argument("--views", type=bounded(Annotated[int, Ge(1), Le(MAX_BATCH_SIZE)]), default=4)
    parser.add_argument("--size", type=bounded(RenderSize), default=512, help="render size in px (multiple of 8)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                        help="auto: float16 on CUDA, float32 on the CPU")
    parser.add_argument("--steps", type=bounded(Steps), default=1)
    parser.add_argument("--gaussians", type=bounded(Annotated[int, Ge(1), Le(MAX_POINTS)]), default=100_000,
                        help="initial Gaussians (a sphere)")
    parser.add_argument("--method", choices=["ism", "sds"], default="ism")
    parser.add_argument("--no-vae-checkpointing", action="store_true",
                        help="keep the VAE encoder's activations for the backward (more memory)")
    parser.add_argument("--channels-last", action="store_true", help="UNet and VAE in channels-last format")
    parser.add_argument("--seed", type=bounded(SEED), default=0)
    parser.set_defaults(func=cmd_bench_step)
    return parser


def cmd_bench_step(args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`bench_step` from parsed arguments."""
    return bench_step(
        arch=args.arch, views=args.views, size_px=args.size, device=args.device, dtype=args.dtype, steps=args.steps,
        gaussians=args.gaussians, method=args.method, vae_checkpointing=not args.no_vae_checkpointing,
        channels_last=args.channels_last, seed=args.seed,
    )
