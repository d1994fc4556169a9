"""Build ``assets/demo/``: the offline demo dataset of the multi-view prior (DESIGN §5).

Three asymmetric objects of coloured primitives ("a potted flower", "a snowman", "a red toy car") rendered with
the project's torch renderer into the NeRF-synthetic layout (``<object>/transforms_{train,test}.json``, RGBA
PNGs, ``caption.txt``). The train views are a grid over the band the demo preset samples (radius 4, fovy 0.6 rad,
polar 60-100 degrees, all azimuths); the test views are seeded random views in the same band. See
``lucid_app/bench/demo_dataset.py`` for the objects and conventions.

Run from the repository root: ``python assets/make_demo_dataset.py`` (about a minute on two CPU cores).
Regenerating with fewer views leaves the old extra PNGs in place; delete the folder first in that case.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lucid_app.bench import demo_dataset
from lucid_app.render import make_renderer

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "assets" / "demo", help="dataset folder")
    parser.add_argument("--size", type=int, default=demo_dataset.DEFAULT_SIZE_PX, help="image size in pixels")
    parser.add_argument("--train-views", type=int, default=demo_dataset.DEFAULT_TRAIN_VIEWS)
    parser.add_argument("--test-views", type=int, default=demo_dataset.DEFAULT_TEST_VIEWS)
    parser.add_argument("--points", type=int, default=demo_dataset.DEFAULT_NUM_POINTS, help="Gaussians per object")
    parser.add_argument("--seed", type=int, default=demo_dataset.DEFAULT_SEED)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folders = demo_dataset.build_demo_dataset(
        args.out, make_renderer("torch", "cpu"), size_px=args.size, train_views=args.train_views,
        test_views=args.test_views, num_points=args.points, seed=args.seed,
    )
    logging.info("wrote %s", ", ".join(str(f) for f in folders))


if __name__ == "__main__":
    main()
