"""Guidance without 3D: optimise C free images under any prior, from mid-grey (or exact views), and score them.

Isolates the guidance from the renderer, the cameras and densification: x are C images [C, R, R, 3] in [0, 1] (R =
the prior's resolution), Adam on the pixels, the loss of ``GUIDANCES[method]`` on ``prior.encode_images(x)`` with
view prompts at the azimuths 0, 90, 180, -90 (C = 4), the demo preset's guidance settings (``presets/demo.yaml``)
plus ``--set`` overrides. Every ``--every`` steps it prints the PSNR of each image to its nearest *train* image of
the prompt's object (mean over the C images) and the pixels' standard deviation (saturation shows as a growing
std). ``--start test`` starts instead from 4 of the object's held-out test views at their own azimuths (exact
images of the object: where a guidance that restores leaves them) and also reports each image's PSNR to its start.
The last line of stdout is one JSON object with every figure.

    python bench/distill_free_image.py --model assets/demo_prior --prompt "a red toy car" --methods sds ism sdi naive
    python bench/distill_free_image.py --model assets/demo_prior --methods ism --set guidance.warmup_steps=300
    python bench/distill_free_image.py --model assets/demo_prior --methods sds ism --start test --steps 150 --every 25
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AZIMUTHS_DEG = (0.0, 90.0, 180.0, -90.0)


def distill(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """One method's run (module docstring): its figures at every ``--every`` steps."""
    import torch

    from lucid_app.bench.distill2d import psnr_to_nearest
    from lucid_app.bench.metrics import psnr
    from lucid_app.guidance import GUIDANCES
    from lucid_app.guidance.base import for_run
    from lucid_app.guidance.prompts import encode_prompt_set
    from lucid_app.lab.doctor.references import spread_indices
    from lucid_app.priors import load_prior
    from lucid_app.priors.model_ref import multiview_ref
    from lucid_app.priors.multiview import (
        read_dataset,
        select_object_index,
        with_test_split,
    )
    from lucid_app.train.prepare import resolve_config

    config = resolve_config("demo", prompt=args.prompt, model=args.model,
                            overrides=[*args.set, f"guidance.method={method}", f"seed={args.seed}"])
    prior = load_prior(config.model.id, config.model, "cpu")
    size = int(prior.encode_images(torch.zeros(1, 8, 8, 3)).shape[-1])
    root = Path(multiview_ref(args.dataset).location)
    data = read_dataset(root, size)
    obj = data.objects[select_object_index(data, args.prompt)]
    train = obj.train_images  # [N, R, R, 3]
    guidance = GUIDANCES[method]
    guidance_config = for_run(config.guidance, args.steps)
    prompts = encode_prompt_set(prior, config.prompt)
    if args.start == "test":
        obj = with_test_split(obj)
        chosen = torch.tensor(spread_indices(obj.test_images.shape[0], len(AZIMUTHS_DEG)))
        start_images, azimuth = obj.test_images[chosen], obj.test_cameras[chosen].azimuth_deg.float()
    else:
        azimuth = torch.tensor(AZIMUTHS_DEG)
        start_images = torch.full((len(AZIMUTHS_DEG), size, size, 3), 0.5)
    pixels = start_images.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)

    def nearest_psnr() -> float:
        x = pixels.detach().clamp(0.0, 1.0)
        return sum(psnr_to_nearest(image, train) for image in x) / len(x)

    def start_psnr() -> float:
        x = pixels.detach().clamp(0.0, 1.0)
        return sum(float(psnr(image, first)) for image, first in zip(x, start_images)) / len(x)

    def row(step: int) -> list[float]:
        return [step, round(nearest_psnr(), 2), round(float(pixels.detach().clamp(0, 1).std()), 3),
                round(min(start_psnr(), 99.0), 2)]

    figures = [row(0)]
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x0 = prior.encode_images(pixels.clamp(0.0, 1.0))
        out = guidance(prior, x0, azimuth, prompts, step, guidance_config, generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        if step % args.every == 0 or step == args.steps:
            figures.append(row(step))
            print(method, "step", step, "nearest-image PSNR", figures[-1][1], "std", figures[-1][2],
                  "PSNR to the start", figures[-1][3], file=sys.stderr)
    return {"method": method, "by_step": figures, "s_per_step": round((time.perf_counter() - start) / args.steps, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/demo_prior")
    parser.add_argument("--dataset", default="assets/demo", help="the dataset whose train images score the result")
    parser.add_argument("--prompt", default="a red toy car")
    parser.add_argument("--methods", nargs="+", default=["sds", "ism", "sdi", "naive"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", choices=["grey", "test"], default="grey",
                        help="mid-grey images at 4 azimuths, or 4 of the object's held-out test views (exact images)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    results = [distill(args, method) for method in args.methods]
    print(json.dumps({"model": args.model, "prompt": args.prompt, "steps": args.steps, "lr": args.lr,
                      "start": args.start, "overrides": args.set,
                      "columns": ["step", "nearest_psnr_db", "pixel_std", "start_psnr_db"],
                      "results": results}))


if __name__ == "__main__":
    main()
