"""SDS vs ISM pseudo-GT inconsistency per object (supplementary Fig. 1 as numbers), with any prior.

Protocol, per object of the dataset:
1. A *partially trained* object: the supervised oracle (``lucid_app/bench/oracle.py``) runs ``--train-steps`` steps of
   the demo preset with the dataset's camera band (``bench quality --method oracle``'s run, learning rates ending
   there). Its renders are recognisably the object but not yet its images — the state a guidance works on for most
   of a run — and they favour neither guidance (initial Gaussians, a grey ball, would make both pseudo-GTs
   content-free; a guidance-trained object would favour the guidance that trained it).
2. Renders of it at the object's first ``--views`` *test* cameras, on white, at the render size.
3. ``lucid_app.lab.inspector.inspect_pseudo_gt`` (what ``python -m lucid_app inspect`` runs) on those renders with the
   prior ``--model``, the run's prompt and guidance settings and the prior's camera control: SDS and ISM
   pseudo-GTs (the guided x̂₀ estimate) at t = 500 and 800 (ISM with the preset's δ_T) for seeds 0, 1, 2, and
       inconsistency = mean over pixels, channels and views of the per-pixel std across the seeds.
Each object's JSON line is printed as it finishes (prefixed ``object``); the last line of stdout is one JSON object
with every figure, and ``sds_over_ism`` = SDS's inconsistency / ISM's at each t (> 1: SDS's pseudo-GTs vary more).

    python bench/pseudo_gt.py --dataset assets/demo --objects "a red toy car" "a potted flower" "a snowman"
    python bench/pseudo_gt.py --model runs/prior --train-steps 200
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lucid_app.bench.quality import (  # noqa: E402
    DEFAULT_DATASET,
    ORACLE,
    eval_schedule,
    make_trainer,
    prepare_quality,
    render_views,
    train_and_score,
)

TIMESTEPS = (500, 800)
SEEDS = 3


def pseudo_gt_object(args: argparse.Namespace, prompt: str | None) -> dict[str, Any]:
    """The protocol of the module docstring for one object; its figures."""
    from lucid_app.config.devices import resolve_device
    from lucid_app.lab.inspector import InspectSettings, inspect_pseudo_gt, prior_control
    from lucid_app.priors import load_prior

    start = time.perf_counter()
    device = resolve_device(args.device)
    setup = prepare_quality(args.dataset, prompt, ORACLE, args.train_steps, args.seed, args.set, args.model)
    config, obj = setup.config, setup.object
    oracle = make_trainer(setup, ORACLE, None, device)
    cameras = obj.test_cameras.to(device)
    trained = train_and_score(oracle, args.train_steps, eval_schedule(args.train_steps), cameras,
                              obj.test_images.cpu(), label=f"{ORACLE} {config.prompt.text!r}")
    views = cameras[: args.views]
    renders = render_views(oracle.renderer, oracle.gaussians.splats(), views)
    prior = load_prior(config.model.id, config.model, device)
    settings = InspectSettings(timesteps=TIMESTEPS, delta_ts=(config.guidance.delta_t,), seeds=SEEDS,
                               negatives=("neg",))
    _, numbers = inspect_pseudo_gt(prior, renders, views.azimuth_deg.cpu(), config.prompt, config.guidance,
                                   settings, control=prior_control(prior, views))
    ratios = {f"t{t}": numbers[f"sds_t{t}_neg"] / max(numbers[f"ism_t{t}_dt{config.guidance.delta_t}_neg"], 1e-12)
              for t in TIMESTEPS}
    return {
        "object": config.prompt.text, "model": config.model.id, "train_steps": args.train_steps,
        "seed": args.seed, "render_psnr": round(trained["final_psnr"], 2), "views": len(views),
        "delta_t": config.guidance.delta_t, "seeds": SEEDS,
        "inconsistency": {key.removesuffix("_neg"): round(value, 5) for key, value in numbers.items()},
        "sds_over_ism": {key: round(value, 3) for key, value in ratios.items()},
        "wall_s": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--model", default=None, metavar="PRIOR", help="default: multiview: + the dataset")
    parser.add_argument("--objects", nargs="+", default=None, help="captions (default: every object's)")
    parser.add_argument("--train-steps", type=int, default=150, help="oracle steps of the partially trained object")
    parser.add_argument("--views", type=int, default=4, help="test views inspected per object")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the pseudo-GT seeds are 0..2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    objects = args.objects
    if objects is None:
        objects = prepare_quality(args.dataset, None, ORACLE, 1, args.seed, args.set, args.model).dataset.captions
    results = []
    for prompt in objects:
        result = pseudo_gt_object(args, prompt)
        results.append(result)
        print("object", json.dumps(result), flush=True)
    print(json.dumps({"timesteps": list(TIMESTEPS), "objects": results}))


if __name__ == "__main__":
    main()
