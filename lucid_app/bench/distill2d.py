"""The 2D distillation check: optimise a free image (no 3D) with ISM or SDS and measure PSNR to the data.

The parameter is an RGB image [1, R, R, 3] in [0, 1] (R = the prior's resolution), initialised mid-grey and
optimised with Adam through ``prior.encode_images`` → guidance → ``loss.backward()``, clamped to [0, 1] after
each step. PSNR is measured against the nearest training image of the multi-view prior (so only that prior
gives a PSNR). ``python -m lucid_app bench distill2d`` (:func:`add_distill2d_parser`) runs it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

import torch

from lucid_app.config import GuidanceConfig, ModelConfig, PromptConfig, replace
from lucid_app.guidance import GUIDANCES
from lucid_app.guidance.base import for_run
from lucid_app.guidance.prompts import encode_prompt_set
from lucid_app.priors import load_prior
from lucid_app.priors.multiview import MultiViewPrior

logger = logging.getLogger(__name__)

MID_GREY = 0.5


def psnr_to_nearest(rgb: torch.Tensor, references: torch.Tensor) -> float:
    """PSNR (dB, peak 1) of one image [H, W, 3] to the closest of ``references`` [K, H, W, 3], all in [0, 1]."""
    mse = ((references - rgb[None]) ** 2).flatten(1).mean(dim=1).min()
    return float(10.0 * math.log10(1.0 / max(float(mse), 1e-12)))


def distill2d(
    model: str | MultiViewPrior,
    prompt: str,
    method: Literal["ism", "sds", "sdi", "naive"] = "ism",
    steps: int = 500,
    seed: int = 0,
    *,
    negative: str | None = None,
    lr: float = 0.01,
    guidance: GuidanceConfig | None = None,
    model_config: ModelConfig | None = None,
    eval_every: int = 10,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Distil one image from the prior with ``method`` and report PSNR over the steps.

    Args:
        model: ``multiview:DIR`` (or an already loaded :class:`MultiViewPrior`).
        prompt: the positive prompt (plain, no view suffix: the image has no camera; azimuth 0 is passed).
        method: ``"ism"``, ``"sds"``, ``"sdi"`` or ``"naive"`` (keys of ``lucid_app.guidance.GUIDANCES``).
        steps: optimisation steps.
        seed: seeds the one torch.Generator used for every draw.
        negative: negative prompt (default: ``PromptConfig``'s paper negative, unconditional on the multi-view
            prior unless it matches a caption).
        lr: Adam learning rate on the pixels.
        guidance: guidance settings (default ``GuidanceConfig()``; its ``method`` is overridden by ``method``).
        model_config: used to load ``model`` when it is a string (``multiview_resolution``).
        eval_every: PSNR is recorded every ``eval_every`` steps and after the last one.
        device: where the prior and the image live.

    Returns:
        ``{"method", "steps", "psnr_by_step": [[step, psnr], ...], "final_psnr", "wall_s"}``.
    """
    if method not in GUIDANCES:
        raise ValueError(f"distill2d: unknown method {method!r}; valid: {sorted(GUIDANCES)}")
    prior = load_prior(model, model_config or ModelConfig(), device) if isinstance(model, str) else model
    if not isinstance(prior, MultiViewPrior):
        raise ValueError("distill2d measures PSNR against the dataset: use a multiview:DIR model")
    config = for_run(replace(guidance or GuidanceConfig(), method=method), steps)
    prompt_config = PromptConfig(text=prompt, view_dependent=False)
    if negative is not None:
        prompt_config = replace(prompt_config, negative=negative)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    guidance_fn = GUIDANCES[method]

    start = time.perf_counter()
    prompts = encode_prompt_set(prior, prompt_config)
    references = prior.decode(prior.images)
    size = prior.resolution
    rgb = torch.full((1, size, size, 3), MID_GREY, device=prior.device, requires_grad=True)
    optimizer = torch.optim.Adam([rgb], lr=lr)
    azimuth = torch.zeros(1, device=prior.device)
    psnr_by_step: list[list[float]] = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        out = guidance_fn(prior, prior.encode_images(rgb), azimuth, prompts, step, config, generator)
        out.loss.backward()
        optimizer.step()
        with torch.no_grad():
            rgb.clamp_(0.0, 1.0)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            psnr_by_step.append([step + 1, psnr_to_nearest(rgb.detach()[0], references)])
    wall_s = time.perf_counter() - start
    final = psnr_by_step[-1][1] if psnr_by_step else psnr_to_nearest(rgb.detach()[0], references)
    logger.info("distill2d %s: %d steps, final PSNR %.2f dB, %.2f s", method, steps, final, wall_s)
    return {"method": method, "steps": steps, "psnr_by_step": psnr_by_step, "final_psnr": final, "wall_s": wall_s}
