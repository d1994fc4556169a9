"""Build a held-out dataset for the ISM-readiness gate: three new objects the shipped prior's recipe has never seen.

``train-prior``'s default recipe must reach the doctor's gate (r_ISM > 0 at t = 300 and 450 on the test views) in
at most 30 minutes on two cores on ``assets/demo`` *and* on a dataset it was not tuned on (docs/BENCHMARKS.md,
"The prior doctor and an ISM-ready prior"). This script writes that dataset with the demo's own tooling
(:mod:`lucid_app.bench.demo_dataset`: the same primitives, renderer, orbit band, 64 px, 300 grid train views and 20
random test views per object) but other objects, colours and test cameras (seed 1). Fixed before any recipe was tried on
it; the gate is measured on "a yellow rubber duck", and the other two objects are reported beside it.

    python bench/heldout_dataset.py --out /tmp/heldout      # about a minute on two cores; do not commit the images
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lucid_app.bench import demo_dataset
from lucid_app.bench.demo_dataset import BLACK, BROWN, GREEN, GREY, ORANGE, RED, WHITE, YELLOW, DemoObject
from lucid_app.render import make_renderer
from lucid_app.scene.primitives import Primitive

SEED = 1
GATE_CAPTION = "a yellow rubber duck"
DARK_BLUE = (0.05, 0.1, 0.45)
PURPLE = (0.45, 0.15, 0.6)


def rubber_duck() -> DemoObject:
    """A yellow duck facing +y: round body, head towards the front, orange beak, black eyes, a tail up at the
    back, and a purple bow on its left (-x) side of the neck."""
    prims = (
        Primitive("ellipsoid", (0.0, -0.05, -0.25), (0.38, 0.5, 0.3), YELLOW),
        Primitive("ellipsoid", (0.0, 0.25, 0.25), (0.24, 0.24, 0.24), YELLOW),
        Primitive("cone", (0.0, 0.55, 0.2), (0.1, 0.1, 0.1), ORANGE, axis=(0.0, 1.0, 0.0)),
        Primitive("ellipsoid", (-0.1, 0.45, 0.33), (0.035, 0.025, 0.04), BLACK),
        Primitive("ellipsoid", (0.1, 0.45, 0.33), (0.035, 0.025, 0.04), BLACK),
        Primitive("cone", (0.0, -0.55, 0.0), (0.14, 0.14, 0.16), YELLOW, axis=(0.0, -1.0, 0.8)),
        Primitive("ellipsoid", (-0.2, 0.2, 0.02), (0.05, 0.1, 0.08), PURPLE),
    )
    return DemoObject("rubber_duck", GATE_CAPTION, prims)


def lighthouse() -> DemoObject:
    """A red-and-white striped lighthouse: four tapering bands, a black gallery, a yellow lamp, a dark-blue door
    on the front (+y) and a small window on its right (+x)."""
    bands = []
    for k in range(4):
        radius = 0.3 - 0.04 * k
        bands.append(Primitive("cylinder", (0.0, 0.0, -0.6 + 0.3 * k), (radius, radius, 0.15), RED if k % 2 else WHITE))
    prims = (
        *bands,
        Primitive("cylinder", (0.0, 0.0, 0.6), (0.26, 0.26, 0.03), BLACK),
        Primitive("cylinder", (0.0, 0.0, 0.72), (0.14, 0.14, 0.1), YELLOW),
        Primitive("cone", (0.0, 0.0, 0.9), (0.17, 0.17, 0.09), RED),
        Primitive("box", (0.0, 0.29, -0.62), (0.08, 0.02, 0.12), DARK_BLUE),
        Primitive("box", (0.24, 0.0, -0.05), (0.02, 0.05, 0.06), DARK_BLUE),
    )
    return DemoObject("lighthouse", "a striped lighthouse", prims)


def tractor() -> DemoObject:
    """A green tractor, long along y: a bonnet at the front (+y) with a grey grille, a cabin towards the back,
    big black rear wheels, small front wheels, and a grey exhaust pipe on its left (-x)."""
    wheel = (1.0, 0.0, 0.0)
    prims = (
        Primitive("box", (0.0, 0.25, -0.1), (0.22, 0.35, 0.16), GREEN),
        Primitive("box", (0.0, -0.3, 0.1), (0.26, 0.22, 0.3), GREEN),
        Primitive("box", (0.0, -0.3, 0.2), (0.27, 0.23, 0.12), GREY),
        Primitive("box", (0.0, 0.61, -0.1), (0.16, 0.02, 0.1), GREY),
        Primitive("cylinder", (0.34, -0.3, -0.2), (0.3, 0.3, 0.07), BLACK, axis=wheel),
        Primitive("cylinder", (-0.34, -0.3, -0.2), (0.3, 0.3, 0.07), BLACK, axis=wheel),
        Primitive("cylinder", (0.27, 0.4, -0.32), (0.16, 0.16, 0.05), BLACK, axis=wheel),
        Primitive("cylinder", (-0.27, 0.4, -0.32), (0.16, 0.16, 0.05), BLACK, axis=wheel),
        Primitive("cylinder", (-0.12, 0.4, 0.2), (0.03, 0.03, 0.2), GREY),
        Primitive("ellipsoid", (0.0, -0.3, 0.45), (0.2, 0.18, 0.03), BROWN),
        Primitive("ellipsoid", (0.0, 0.62, 0.02), (0.05, 0.02, 0.05), ORANGE),
    )
    return DemoObject("tractor", "a green tractor", prims)


def heldout_objects() -> list[DemoObject]:
    return sorted([rubber_duck(), lighthouse(), tractor()], key=lambda obj: obj.name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write (not committed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folders = demo_dataset.build_demo_dataset(args.out, make_renderer("torch", "cpu"), seed=SEED,
                                              objects=heldout_objects())
    logging.info("wrote %s (gate object: %r)", ", ".join(str(f) for f in folders), GATE_CAPTION)


if __name__ == "__main__":
    main()
