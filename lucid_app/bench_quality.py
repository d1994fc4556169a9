"""The quality benchmark: train on the multi-view demo prior with ISM or SDS, score held-out views.

The run is the demo preset (``presets/demo.yaml``) on a ``multiview:DIR`` dataset, trained in memory with
:meth:`Trainer.train_step` (nothing is written). The prompt selects one object of the dataset; its *train* views
are what the prior knows, its *test* views (``transforms_test.json``) are used only here: at each eval step the
current Gaussians are rendered from the test cameras on white and compared with the test images by mean PSNR
and SSIM (``metrics.py``). Wired to ``python -m lucid_app bench quality`` through :func:`add_quality_parser`.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from lucid_app.cameras import CameraBatch
from lucid_app.cli_types import positive_int as _positive_int
from lucid_app.devices import resolve_device
from lucid_app.events import StepEvent
from lucid_app.guidance import GUIDANCES
from lucid_app.metrics import psnr, ssim
from lucid_app.priors import load_prior
from lucid_app.priors.multiview import (
    MODEL_PREFIX,
    MultiViewObject,
    MultiViewPrior,
    resize_images,
)
from lucid_app.render.base import Renderer, Splats
from lucid_app.runs import DEMO_PRESET, resolve_config

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "assets/demo"
DEFAULT_EVAL_STEPS = (250, 500, 1000, 2000)
# Test views rendered per renderer call (bounds the memory of the evaluation render).
EVAL_BATCH = 8
WHITE = (1.0, 1.0, 1.0)


def eval_schedule(steps: int, eval_steps: Sequence[int] | None = None) -> list[int]:
    """The sorted, distinct eval steps in [1, steps] (default :data:`DEFAULT_EVAL_STEPS`), always with ``steps``.

    Raises:
        ValueError: ``steps`` < 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    wanted = DEFAULT_EVAL_STEPS if eval_steps is None else eval_steps
    return sorted({int(s) for s in wanted if 1 <= int(s) <= steps} | {steps})


def select_object(prior: MultiViewPrior, prompt: str) -> MultiViewObject:
    """The one object of ``prior`` that ``prompt`` selects (the prior's own caption matching).

    Raises:
        ValueError: the prompt selects several objects, or the object has no test split.
    """
    weights = prior.encode_prompts([prompt])[0].cpu()
    indices = sorted({int(i) for i in prior.object_index[weights > 0]})
    if len(indices) != 1:
        captions = [prior.objects[i].caption for i in indices]
        raise ValueError(f"prompt {prompt!r} selects {len(indices)} objects ({captions}); name exactly one")
    obj = prior.objects[indices[0]]
    if obj.test_images is None or obj.test_cameras is None:
        raise ValueError(f"object {obj.caption!r} has no transforms_test.json: nothing to score against")
    return obj


@torch.no_grad()
def render_views(renderer: Renderer, splats: Splats, cameras: CameraBatch, batch: int = EVAL_BATCH) -> torch.Tensor:
    """Render every camera on white, ``batch`` views at a time.

    Returns:
        [C, H, W, 3] in [0, 1] on the CPU.
    """
    frames = []
    for start in range(0, len(cameras), batch):
        cams = cameras[start : start + batch]
        backgrounds = torch.tensor(WHITE, device=cams.viewmats.device).expand(len(cams), 3)
        frames.append(renderer.render(splats, cams, backgrounds).rgb.clamp(0.0, 1.0).cpu())
    return torch.cat(frames)


def score_views(renders: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(mean PSNR in dB, mean SSIM) of renders [C, H, W, 3] against targets [C, R, R, 3], resizing to R."""
    if renders.shape[1:3] != targets.shape[1:3]:
        renders = resize_images(renders, int(targets.shape[1]))
    return psnr(renders, targets), ssim(renders, targets)


def quality(
    dataset: str,
    prompt: str | None = None,
    method: Literal["ism", "sds", "naive"] = "ism",
    steps: int = 1000,
    seed: int = 0,
    eval_steps: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    on_step: Callable[[StepEvent], None] | None = None,
) -> dict[str, Any]:
    """Train the demo preset on ``dataset`` and measure held-out PSNR/SSIM over the steps.

    Args:
        dataset: a multi-view dataset folder (relative paths are also looked up in the repository).
        prompt: the object's caption (default: the first object's caption).
        method: ``"ism"`` or ``"sds"``.
        steps: training steps (``optim.steps``, so the learning-rate and δ_T schedules end there).
        seed: the run's seed (``seed``).
        eval_steps: steps to evaluate at (default 250/500/1000/2000 up to ``steps``); ``steps`` is always added.
        overrides: extra ``section.key=value`` config overrides, applied before method/steps/seed.
        device: where the prior, the Gaussians and the renders live.
        on_step: called with each step's :class:`StepEvent` (e.g. a progress bar).

    Returns:
        JSON-serialisable ``{"method", "steps", "seed", "prompt", "psnr_by_step": [[step, dB], ...],
        "ssim_by_step": [[step, ssim], ...], "final_psnr", "final_ssim", "n_gaussians", "wall_s",
        "s_per_step"}``; ``wall_s`` covers training and evaluation, ``s_per_step`` training steps only.

    Raises:
        ValueError: unknown method, bad steps, a prompt that selects no single object, or a dataset without
            test views (ConfigError / PriorError for bad overrides or datasets).
    """
    from lucid_app.trainer import Trainer  # here, so the CLI's parser (add_quality_parser) stays light

    if method not in GUIDANCES:
        raise ValueError(f"unknown method {method!r}; valid: {sorted(GUIDANCES)}")
    schedule = eval_schedule(steps, eval_steps)
    fixed = [f"guidance.method={method}", f"optim.steps={steps}", f"seed={seed}"]
    config = resolve_config(DEMO_PRESET, model=f"{MODEL_PREFIX}{dataset}", overrides=[*overrides, *fixed])
    prior = load_prior(config.model.id, config.model, resolve_device(device))
    if not isinstance(prior, MultiViewPrior):
        raise ValueError(f"the quality benchmark needs a {MODEL_PREFIX}DIR dataset, got {config.model.id!r}")
    text = prior.captions[0] if prompt is None else prompt
    obj = select_object(prior, text)
    config = resolve_config(DEMO_PRESET, prompt=text, model=config.model.id, overrides=[*overrides, *fixed])
    test_cameras = obj.test_cameras.to(prior.device)
    targets = obj.test_images.cpu()

    trainer = Trainer(config, prior)
    psnr_by_step: list[list[float]] = []
    ssim_by_step: list[list[float]] = []
    train_s = 0.0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        tick = time.perf_counter()
        event = trainer.train_step()
        train_s += time.perf_counter() - tick
        if on_step is not None:
            on_step(event)
        if step in schedule:
            value_psnr, value_ssim = score_views(render_views(trainer.renderer, trainer.gaussians.splats(),
                                                              test_cameras), targets)
            psnr_by_step.append([step, value_psnr])
            ssim_by_step.append([step, value_ssim])
            logger.info("%s %r step %d: PSNR %.2f dB, SSIM %.3f, %d Gaussians", method, text, step, value_psnr,
                        value_ssim, trainer.gaussians.count)
    wall_s = time.perf_counter() - start
    final_psnr, final_ssim = psnr_by_step[-1][1], ssim_by_step[-1][1]
    if not math.isfinite(final_psnr):
        logger.warning("final PSNR is %s (renders identical to the test images?)", final_psnr)
    return {
        "method": method, "steps": steps, "seed": seed, "prompt": text, "dataset": dataset,
        "psnr_by_step": psnr_by_step, "ssim_by_step": ssim_by_step,
        "final_psnr": final_psnr, "final_ssim": final_ssim, "n_gaussians": trainer.gaussians.count,
        "wall_s": round(wall_s, 3), "s_per_step": round(train_s / steps, 4), "overrides": list(overrides),
    }


# ------------------------------------------------------------------------------------------------ CLI wiring


def _step_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive steps like 250,500,1000, got {text!r}")
    return values


def add_quality_parser(bench_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``quality`` to the ``bench`` sub-commands; its ``func`` is :func:`cmd_bench_quality`."""
    parser = bench_subparsers.add_parser(
        "quality", help="train the demo preset with ISM or SDS; PSNR/SSIM on the object's held-out test views"
    )
    parser.add_argument("--dataset", default=DEFAULT_DATASET, metavar="DIR", help="multi-view dataset folder")
    parser.add_argument("--prompt", default=None, help="caption of the object (default: the first object's)")
    parser.add_argument("--method", choices=sorted(GUIDANCES), default="ism")
    parser.add_argument("--steps", type=_positive_int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-steps", type=_step_list, default=None, metavar="N,N,...",
                        help="steps to evaluate at (default 250,500,1000,2000 up to --steps; the last is added)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override on the demo preset, e.g. guidance.lambda_guidance=1 (repeatable)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.set_defaults(func=cmd_bench_quality)
    return parser


def cmd_bench_quality(args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`quality` from parsed arguments with a progress bar on stderr."""
    from tqdm import tqdm

    with tqdm(total=args.steps, desc=f"quality {args.method}", unit="step", file=sys.stderr,
              dynamic_ncols=True) as bar:

        def on_step(event: StepEvent) -> None:
            bar.update(1)
            bar.set_postfix(gaussians=event.n_gaussians, refresh=False)

        return quality(args.dataset, args.prompt, args.method, args.steps, args.seed, args.eval_steps, args.set,
                       args.device, on_step=on_step)
