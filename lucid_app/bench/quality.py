"""The quality benchmark: train with a guidance (or the supervised oracle), score the object's held-out views.

The run is a preset (``--preset``, default ``presets/demo.yaml``) trained in memory with :meth:`Trainer.train_step`
(nothing is written), with any prior ``load_prior`` accepts (``--model``; default ``multiview:`` + the dataset). The
*dataset* (a NeRF-synthetic style folder, DESIGN §5) is read here with the multi-view reader, whatever the model: the
prompt selects one of its objects by the multi-view prior's own caption matching (:mod:`lucid_app.bench.dataset`), and
1. the training cameras' band comes from that object's ``transforms_train.json`` (``bench_dataset.camera_band``:
   radius, fovy, polar and azimuth ranges, no widening, no jitter), applied as ``cameras.*`` overrides under the
   user's ``--set`` (which win), never from the demo's constants;
2. its *test* views (``transforms_test.json``) are used only for scoring: the Gaussians are rendered from the test
   cameras on white and compared with the test images by mean PSNR and SSIM (:mod:`lucid_app.bench.metrics`), at step 0
   (``psnr_init``, the initial Gaussians) and at each eval step;
3. its *train* views are what ``--method oracle`` fits photometrically at their own cameras
   (:mod:`lucid_app.bench.oracle`): the same Gaussians, seed, optimiser, schedules, densification, regularisers and
   steps, the ceiling any guidance could reach on this object at this budget (it loads no prior).
With ``with_oracle`` one call runs the oracle too (same config and seed) and reports
    oracle_fraction = (final_psnr − psnr_init) / (oracle_psnr − psnr_init),
the share of the supervised ceiling's improvement over the initial Gaussians that the method reaches (1 = as good
as supervision; None when the oracle does not improve on the initial Gaussians). Wired to
``python -m lucid_app bench quality`` through :func:`add_quality_parser`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lucid_app.bench.dataset import band_cameras, band_overrides, camera_band
from lucid_app.bench.metrics import psnr, ssim
from lucid_app.config import TrainConfig
from lucid_app.config.devices import resolve_device
from lucid_app.guidance import GUIDANCES
from lucid_app.lab.doctor.measure import METHOD_PREVIEWS, DoctorSettings
from lucid_app.lab.doctor.run import diagnose
from lucid_app.priors import load_prior
from lucid_app.priors.base import DiffusionPrior
from lucid_app.priors.model_ref import multiview_ref
from lucid_app.priors.multiview import (
    WHITE,
    MultiViewPrior,
    read_dataset,
    select_object_index,
    with_test_split,
)
from lucid_app.priors.nerf_dataset import MultiViewObject, object_folders, resize_images
from lucid_app.render.base import Renderer, Splats
from lucid_app.render.cameras import CameraBatch
from lucid_app.train.events import StepEvent
from lucid_app.train.prepare import DEMO_PRESET, resolve_config

if TYPE_CHECKING:
    from lucid_app.train.trainer import Trainer

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "assets/demo"
DEFAULT_EVAL_STEPS = (250, 500, 1000, 2000)
ORACLE = "oracle"
# Every method: the registered guidances (a new one appears here by itself) and the supervised ceiling.
METHODS = (*sorted(GUIDANCES), ORACLE)
# The doctor beside every figure (module docstring): the readiness gate's timesteps, 3 seeds, 4 test views.
DOCTOR_METHODS = tuple(METHOD_PREVIEWS)
DOCTOR_TIMESTEPS = (300, 450)
DOCTOR_SEEDS = 3
DOCTOR_VIEWS = 4
# Test views rendered per renderer call (bounds the memory of the evaluation render).
EVAL_BATCH = 8


def eval_schedule(steps: int, eval_steps: Sequence[int] | None = None) -> list[int]:
    """The sorted, distinct eval steps in [1, steps] (default :data:`DEFAULT_EVAL_STEPS`), always with ``steps``.

    Raises:
        ValueError: ``steps`` < 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    wanted = DEFAULT_EVAL_STEPS if eval_steps is None else eval_steps
    return sorted({int(s) for s in wanted if 1 <= int(s) <= steps} | {steps})


def oracle_fraction(final_psnr: float, init_psnr: float, oracle_psnr: float) -> float | None:
    """(final − init) / (oracle − init): the share of the supervised ceiling's PSNR gain over the initial Gaussians
    that a method reaches; None when undefined (a non-finite PSNR, or an oracle no better than the start)."""
    gain = oracle_psnr - init_psnr
    if not all(math.isfinite(v) for v in (final_psnr, init_psnr, oracle_psnr)) or gain <= 0:
        return None
    return (final_psnr - init_psnr) / gain


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


@dataclass
class QualitySetup:
    """A benchmark run before training: its resolved config (camera band, user overrides, method, steps, seed),
    the dataset as read (:func:`read_dataset`, at ``render.width``), the selected object's index and its band, and
    the dataset's folder."""

    config: TrainConfig
    dataset: MultiViewPrior
    index: int
    band: dict[str, Any]
    root: Path

    @property
    def object(self) -> MultiViewObject:
        return self.dataset.objects[self.index]


def prepare_quality(
    dataset: str,
    prompt: str | None = None,
    method: str = "ism",
    steps: int = 1000,
    seed: int = 0,
    overrides: Sequence[str] = (),
    model: str | None = None,
    preset: str = DEMO_PRESET,
) -> QualitySetup:
    """Resolve a run's config and read its dataset and object (module docstring, steps 1-2).

    Raises:
        ValueError: unknown method, a prompt that selects several objects, or an object without test views
            (ConfigError / PriorError for bad overrides or datasets).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {list(METHODS)}")
    fixed = [f"optim.steps={steps}", f"seed={seed}", *([f"guidance.method={method}"] if method in GUIDANCES else [])]
    dataset_ref = multiview_ref(dataset)
    base = resolve_config(preset, model=dataset_ref.id if model is None else model, overrides=[*overrides, *fixed])
    root = Path(dataset_ref.location)
    data = read_dataset(root, base.render.width)
    text = data.captions[0] if prompt is None else prompt
    index = select_object_index(data, text)
    with_test_split(data.objects[index])
    band = camera_band(band_cameras(object_folders(root)[index]))
    config = resolve_config(preset, prompt=text, model=base.model.id,
                            overrides=[*band_overrides(band), *overrides, *fixed])
    return QualitySetup(config, data, index, band, root)


class CountingPrior:
    """A prior seen through the protocol, counting the samples its ``predict_noise`` evaluates (the cost of a
    guidance in prior evaluations, whatever the batching); every other attribute is the wrapped prior's."""

    def __init__(self, prior: DiffusionPrior) -> None:
        self._prior = prior
        self.samples = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._prior, name)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                      control: torch.Tensor | None = None) -> torch.Tensor:
        """The wrapped prior's ε̂, after adding ``x_t``'s batch size [B, ...] to :attr:`samples`."""
        self.samples += int(x_t.shape[0])
        return self._prior.predict_noise(x_t, t, cond, control)


def doctor_summary(prior: DiffusionPrior, setup: QualitySetup, method: str) -> dict[str, Any]:
    """The prior doctor on the benchmark's own prior, config and object (its first :data:`DOCTOR_VIEWS` test views):
    ``{"t", "restoring": {t: r}, "gain": {...}, "pull": {t: p}, "offset": {t: p / r}, "verdict"}`` for ``method`` at
    :data:`DOCTOR_TIMESTEPS`, so that every figure stands beside the restoring coefficient of the method that made it
    (:mod:`lucid_app.lab.doctor`)."""
    settings = DoctorSettings(timesteps=DOCTOR_TIMESTEPS, methods=(method,), seeds=DOCTOR_SEEDS)
    result = diagnose(prior, setup.config, settings, setup.root, DOCTOR_VIEWS)
    return {"t": result["t"], "restoring": result["restoring"][method], "gain": result["gain"][method],
            "pull": result["pull"][method], "offset": result["offset"][method], "verdict": result["verdict"][method]}


def make_trainer(setup: QualitySetup, method: str, prior: DiffusionPrior | None, device: torch.device) -> Trainer:
    """The run's trainer: a :class:`Trainer` on ``prior`` for a guidance, an :class:`OracleTrainer` on the
    object's train views for ``"oracle"`` (it denoises nothing: the dataset stands in as its prior)."""
    if method == ORACLE:
        from lucid_app.bench.oracle import OracleTrainer

        obj = setup.object
        return OracleTrainer(setup.config, setup.dataset, obj.train_images, obj.train_cameras, device=device)
    from lucid_app.train.trainer import Trainer

    if prior is None:
        raise ValueError(f"method {method!r} needs a prior")
    return Trainer(setup.config, prior, device=device)


def train_and_score(
    trainer: Trainer,
    steps: int,
    schedule: Sequence[int],
    cameras: CameraBatch,
    targets: torch.Tensor,
    on_step: Callable[[StepEvent], None] | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Score the initial Gaussians, then train ``steps`` steps scoring at each step of ``schedule``.

    Args:
        cameras: [V] test cameras (on the trainer's device); targets: [V, R, R, 3] their images in [0, 1].

    Returns:
        ``{"psnr_init", "ssim_init", "psnr_by_step", "ssim_by_step", "final_psnr", "final_ssim", "n_gaussians",
        "wall_s", "s_per_step"}``.
    """
    def score() -> tuple[float, float]:
        return score_views(render_views(trainer.renderer, trainer.gaussians.splats(), cameras), targets)

    start = time.perf_counter()
    psnr_init, ssim_init = score()
    psnr_by_step: list[list[float]] = []
    ssim_by_step: list[list[float]] = []
    train_s = 0.0
    for step in range(1, steps + 1):
        tick = time.perf_counter()
        event = trainer.train_step()
        train_s += time.perf_counter() - tick
        if on_step is not None:
            on_step(event)
        if step in schedule:
            value_psnr, value_ssim = score()
            psnr_by_step.append([step, value_psnr])
            ssim_by_step.append([step, value_ssim])
            logger.info("%s step %d: PSNR %.2f dB, SSIM %.3f, %d Gaussians", label, step, value_psnr, value_ssim,
                        trainer.gaussians.count)
    final_psnr, final_ssim = psnr_by_step[-1][1], ssim_by_step[-1][1]
    if not math.isfinite(final_psnr):
        logger.warning("%s: final PSNR is %s (renders identical to the test images?)", label, final_psnr)
    return {
        "psnr_init": psnr_init, "ssim_init": ssim_init, "psnr_by_step": psnr_by_step, "ssim_by_step": ssim_by_step,
        "final_psnr": final_psnr, "final_ssim": final_ssim, "n_gaussians": trainer.gaussians.count,
        "wall_s": round(time.perf_counter() - start, 3), "s_per_step": round(train_s / steps, 4),
    }


def quality(
    dataset: str,
    prompt: str | None = None,
    method: str = "ism",
    steps: int = 1000,
    seed: int = 0,
    eval_steps: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    on_step: Callable[[StepEvent], None] | None = None,
    model: str | None = None,
    with_oracle: bool = False,
    preset: str = DEMO_PRESET,
    with_doctor: bool = True,
) -> dict[str, Any]:
    """Train the demo preset with ``method`` and measure held-out PSNR/SSIM over the steps (module docstring).

    Args:
        dataset: a multi-view dataset folder (relative paths are also looked up in the repository).
        prompt: the object's caption (default: the first object's caption).
        method: a guidance of :data:`~lucid_app.guidance.GUIDANCES` or ``"oracle"`` (:data:`METHODS`).
        steps: training steps (``optim.steps``, so the learning-rate and δ_T schedules end there).
        seed: the run's seed (``seed``).
        eval_steps: steps to evaluate at (default 250/500/1000/2000 up to ``steps``); ``steps`` is always added.
        overrides: extra ``section.key=value`` config overrides, applied after the dataset's camera band and
            before method/steps/seed.
        device: where the prior, the Gaussians and the renders live.
        on_step: called with each step's :class:`StepEvent` (e.g. a progress bar), the oracle's steps included.
        model: the prior (anything ``load_prior`` accepts; default ``multiview:`` + ``dataset``).
        with_oracle: also run the oracle with the same config and seed and report ``oracle_*``.
        preset: the product settings trained (default the demo preset; e.g. ``learned_demo``), under the camera
            band and ``overrides``.
        with_doctor: also measure the prior doctor's restoring coefficient of ``method`` on this prior and config
            at the object's test views (:func:`doctor_summary`; guidance methods the doctor knows only).

    Returns:
        JSON-serialisable ``{"method", "steps", "seed", "prompt", "dataset", "model", "camera_band", "psnr_init",
        "psnr_by_step": [[step, dB], ...], "ssim_by_step": [[step, ssim], ...], "final_psnr", "final_ssim",
        "n_gaussians", "wall_s", "s_per_step", "overrides", "prior_samples_per_step", "prior_evals_per_view"}``, with
        ``with_oracle`` also ``"oracle_psnr"``, ``"oracle_ssim"``, ``"oracle_fraction"`` and ``"oracle_s_per_step"``;
        ``wall_s`` covers the method's training and evaluation, ``s_per_step`` its training steps only.

    Raises:
        ValueError: unknown method, bad steps, a prompt that selects no single object, or a dataset without
            test views (ConfigError / PriorError for bad overrides or datasets).
    """
    schedule = eval_schedule(steps, eval_steps)
    setup = prepare_quality(dataset, prompt, method, steps, seed, overrides, model, preset)
    config, obj = setup.config, setup.object
    target_device = resolve_device(device)
    prior = None if method == ORACLE else CountingPrior(load_prior(config.model.id, config.model, target_device))
    cameras = obj.test_cameras.to(target_device)
    targets = obj.test_images.cpu()
    label = f"{method} {config.prompt.text!r}"
    run = train_and_score(make_trainer(setup, method, prior, target_device), steps, schedule, cameras, targets,
                          on_step, label)
    result: dict[str, Any] = {
        "method": method, "steps": steps, "seed": seed, "prompt": config.prompt.text, "dataset": dataset,
        "model": config.model.id, "preset": preset, "camera_band": setup.band,
        **{k: v for k, v in run.items() if k != "ssim_init"},
        "overrides": list(overrides),
        # Prior evaluations per training step, in samples (one view at one timestep and prompt = 1) and in units of
        # the C views a step renders (the README's method table counts "calls of 2C" as 2).
        "prior_samples_per_step": round(prior.samples / steps, 2) if prior is not None else 0.0,
        "prior_evals_per_view": (round(prior.samples / steps / config.cameras.batch_size, 2)
                                 if prior is not None else 0.0),
    }
    if with_doctor and method in DOCTOR_METHODS:
        result["doctor"] = doctor_summary(prior._prior, setup, method)
    if with_oracle:
        oracle = run if method == ORACLE else train_and_score(
            make_trainer(setup, ORACLE, None, target_device), steps, schedule, cameras, targets, on_step,
            f"{ORACLE} {config.prompt.text!r}",
        )
        result["oracle_psnr"] = oracle["final_psnr"]
        result["oracle_ssim"] = oracle["final_ssim"]
        result["oracle_fraction"] = oracle_fraction(run["final_psnr"], run["psnr_init"], oracle["final_psnr"])
        result["oracle_s_per_step"] = oracle["s_per_step"]
    return result
