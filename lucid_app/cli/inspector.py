"""The ``inspect`` command: SDS, SDI and ISM pseudo-GTs of a ``.ply``'s views and their inconsistency
(the maths is :mod:`lucid_app.lab.inspector`; the app's job task is :mod:`lucid_app.app.inspect_task`).

Its arguments are defined in :mod:`lucid_app.cli.main`; torch and the prior load inside the command.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lucid_app.config import CameraConfig


def cmd_inspect(args: argparse.Namespace) -> dict[str, Any]:
    """Pseudo-GTs of SDS, SDI and ISM for views of a ``.ply`` (``lucid_app.lab.inspector``); writes
    OUT/pseudo_gt.png."""
    import torch

    from lucid_app.config import ModelConfig, PromptConfig
    from lucid_app.config.devices import resolve_device
    from lucid_app.config.negatives import negative_text
    from lucid_app.io.files import check_output_dir
    from lucid_app.io.media import write_png
    from lucid_app.lab.inspector import (
        InspectSettings,
        inspect_pseudo_gt,
        label_grid,
        orbit_views,
        prior_control,
        render_ply_cameras,
    )
    from lucid_app.priors import load_prior
    from lucid_app.train.prepare import resolve_model_id

    start = time.perf_counter()
    check_output_dir(args.out)
    device = resolve_device(args.device)
    model_id = resolve_model_id(args.model)
    prior = load_prior(model_id, ModelConfig(id=model_id), device, allow_pickle=args.allow_pickle)
    azimuth = torch.tensor(args.azimuth, dtype=torch.float32)
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
