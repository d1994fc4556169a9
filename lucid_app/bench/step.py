"""``bench step``: the cost of training steps at Stable Diffusion 2.1 base's real size, without its weights.

The prior is the full-size architecture with random weights (:mod:`lucid_app.priors.sd_architecture`), loaded into the
same :class:`~lucid_app.priors.stable_diffusion.StableDiffusionPrior` a real checkpoint uses, and the steps are the
trainer's own (:meth:`Trainer.train_step`). Stage times come from thin timing wrappers around the renderer, the prior
and the densifier:

1. ``render``: the renderer's forward pass;
2. ``encode``: the VAE encoder's forward (``prior.encode_images``);
3. ``inversion``: every UNet call of the step but the last (ISM's DDIM inversion; SDS has none);
4. ``guided``: the last UNet call (the guided prediction, one batched call of 2C or 4C samples);
5. ``densify``: the densifier's statistics and events;
6. ``backward``: the rest of the step (the backward pass through the VAE encoder and the renderer, the
   regularisers and the optimiser step; the backward dominates it).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the steps; on the CPU the process's peak resident
set (VmHWM) over the steps, reset after the model is built where the kernel allows (``/proc/self/clear_refs``).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lucid_app.config import TrainConfig, replace
from lucid_app.config.devices import resolve_device, resolve_dtype

logger = logging.getLogger(__name__)

STAGES = ("render", "encode", "inversion", "guided", "densify", "backward")
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timed:
    """Times calls of ``fn`` into ``log`` (seconds, and the batch size of the first tensor argument)."""

    def __init__(self, fn: Callable[..., Any], log: list[tuple[float, int]], device: torch.device) -> None:
        self.fn, self.log, self.device = fn, log, device

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _sync(self.device)
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        _sync(self.device)
        batch = next((int(a.shape[0]) for a in args if isinstance(a, torch.Tensor) and a.dim() > 0), 0)
        self.log.append((time.perf_counter() - start, batch))
        return out


def peak_rss_bytes() -> int:
    """The process's peak resident set size (VmHWM), 0 where /proc is not available."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: ``echo 5 > /proc/self/clear_refs``); False if not possible."""
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def bench_config(views: int, size_px: int, gaussians: int, method: str, seed: int) -> TrainConfig:
    """The paper preset's training settings at ``size_px`` with ``views`` views and ``gaussians`` initial points
    (a sphere: Point-E is optional), for a run of a few steps with no files."""
    base = TrainConfig()
    return replace(
        base,
        seed=seed,
        prompt=replace(base.prompt, text="A delicious hamburger."),
        guidance=replace(base.guidance, method=method),
        cameras=replace(base.cameras, batch_size=views),
        render=replace(base.render, width=size_px, height=size_px),
        init=replace(base.init, shape="sphere", num_points=gaussians),
    )


def bench_step(
    arch: str = "sd21-base",
    views: int = 4,
    size_px: int = 512,
    device: str = "cpu",
    dtype: str = "auto",
    steps: int = 1,
    gaussians: int = 100_000,
    method: str = "ism",
    vae_checkpointing: bool = True,
    channels_last: bool = False,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Build ``arch`` with random weights and time ``steps`` training steps (module docstring).

    Returns:
        The JSON-ready report: per-step UNet evaluations (samples) and calls, mean seconds per step and per stage,
        peak memory, dtype, parameter counts and the settings.
    """
    from lucid_app.priors.sd_architecture import (  # diffusers: imported only when a bench runs
        build_pipeline,
        parameter_counts,
    )
    from lucid_app.priors.stable_diffusion import StableDiffusionPrior
    from lucid_app.train.trainer import Trainer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    build_start = time.perf_counter()
    pipe = build_pipeline(arch, size_px, torch_dtype, seed=seed)  # type: ignore[arg-type]
    counts = parameter_counts(pipe)
    prior = StableDiffusionPrior(f"random:{arch}", pipe, dev, vae_checkpointing=vae_checkpointing,
                                 channels_last=channels_last)
    config = bench_config(views, size_px, gaussians, method, seed)
    trainer = Trainer(config, prior)
    # Prompts are encoded once per run (cached): not part of a step.
    build_s = time.perf_counter() - build_start
    rss_after_build = peak_rss_bytes()
    logger.info("built %s (%s) in %.1f s", arch, ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items()), build_s)

    logs: dict[str, list[tuple[float, int]]] = defaultdict(list)
    trainer.renderer.render = _Timed(trainer.renderer.render, logs["render"], dev)  # type: ignore[method-assign]
    prior.encode_images = _Timed(prior.encode_images, logs["encode"], dev)  # type: ignore[method-assign]
    prior.predict_noise = _Timed(prior.predict_noise, logs["unet"], dev)  # type: ignore[method-assign]
    densify_log = logs["densify"]
    trainer.densifier.accumulate = _Timed(trainer.densifier.accumulate, densify_log, dev)  # type: ignore[method-assign]
    trainer.densifier.step = _Timed(trainer.densifier.step, densify_log, dev)  # type: ignore[method-assign]

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    reset = dev.type == "cpu" and _reset_peak_rss()
    per_step: list[dict[str, float]] = []
    evaluations: list[int] = []
    calls: list[int] = []
    timesteps: list[int] = []
    losses_finite = True
    for k in range(steps):
        for log in logs.values():
            log.clear()
        _sync(dev)
        start = time.perf_counter()
        event = trainer.train_step()
        _sync(dev)
        total = time.perf_counter() - start
        losses_finite = losses_finite and not event.skipped
        timesteps.append(int(event.t))
        unet = logs["unet"]
        stage = {
            "render": sum(s for s, _ in logs["render"]),
            "encode": sum(s for s, _ in logs["encode"]),
            "inversion": sum(s for s, _ in unet[:-1]),
            "guided": sum(s for s, _ in unet[-1:]),
            "densify": sum(s for s, _ in densify_log),
        }
        stage["backward"] = max(total - sum(stage.values()), 0.0)
        stage["total"] = total
        per_step.append(stage)
        evaluations.append(sum(b for _, b in unet))
        calls.append(len(unet))
        logger.info("step %d: %.1f s (%s)", k + 1, total, ", ".join(f"{n} {stage[n]:.1f}" for n in STAGES))
        if on_step is not None:
            on_step(k + 1)

    if dev.type == "cuda":
        peak = {"peak_cuda_allocated_gb": round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)}
    else:
        peak = {"peak_rss_gb": round(peak_rss_bytes() / 2**30, 3), "peak_rss_reset_after_build": reset,
                "peak_rss_build_gb": round(rss_after_build / 2**30, 3)}
    mean = {name: round(sum(s[name] for s in per_step) / len(per_step), 3) for name in (*STAGES, "total")}
    return {
        "command": "bench step", "arch": arch, "device": str(dev), "dtype": str(torch_dtype).removeprefix("torch."),
        "views": views, "size_px": size_px, "gaussians": gaussians, "method": method, "steps": steps,
        "vae_checkpointing": vae_checkpointing, "channels_last": channels_last, "threads": torch.get_num_threads(),
        "parameters_m": {k: round(v / 1e6, 1) for k, v in counts.items()}, "build_s": round(build_s, 1),
        "unet_evaluations_per_step": evaluations, "unet_calls_per_step": calls, "t_per_step": timesteps,
        "s_per_step": mean["total"], "stage_s": {n: mean[n] for n in STAGES},
        "losses_finite": losses_finite, **peak,
    }
