"""Build ``assets/example.ply``: a small snowman of coloured primitives as 3D Gaussians.

The README's first command renders it, so a fresh install shows a turntable without any model weights.
Run from the repository root: ``python assets/make_example_splat.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from lucid_app.config import OptimConfig
from lucid_app.gaussians import GaussianModel
from lucid_app.ply import write_gaussian_ply
from lucid_app.primitives import Primitive, primitives_to_points

WHITE, BLACK, ORANGE, RED, BROWN = (0.95, 0.95, 0.97), (0.05, 0.05, 0.05), (1.0, 0.45, 0.0), (0.85, 0.1, 0.1), (0.45, 0.25, 0.1)

# World z up, the snowman faces +y (the "front", azimuth 0): the carrot nose points at the front camera.
_SNOWMAN = [
    Primitive("ellipsoid", (0.0, 0.0, -0.55), (0.55, 0.55, 0.5), WHITE),
    Primitive("ellipsoid", (0.0, 0.0, 0.2), (0.4, 0.4, 0.37), WHITE),
    Primitive("ellipsoid", (0.0, 0.0, 0.78), (0.28, 0.28, 0.27), WHITE),
    Primitive("cone", (0.0, 0.38, 0.78), (0.06, 0.06, 0.14), ORANGE, axis=(0.0, 1.0, 0.0)),
    Primitive("ellipsoid", (-0.1, 0.24, 0.88), (0.04, 0.03, 0.04), BLACK),
    Primitive("ellipsoid", (0.1, 0.24, 0.88), (0.04, 0.03, 0.04), BLACK),
    Primitive("cylinder", (0.0, 0.0, 0.5), (0.33, 0.33, 0.06), RED),
    Primitive("cylinder", (0.0, 0.0, 1.1), (0.2, 0.2, 0.12), BLACK),
    Primitive("cylinder", (0.62, 0.0, 0.3), (0.03, 0.03, 0.3), BROWN, axis=(1.0, 0.0, 0.5)),
    Primitive("cylinder", (-0.62, 0.0, 0.3), (0.03, 0.03, 0.3), BROWN, axis=(-1.0, 0.0, 0.5)),
]


# Scaled to fit the preview camera (radius 3.5, fovy 0.55 rad: about ±0.95 visible at the origin).
SCALE = 0.72
SNOWMAN = [
    replace(p, center=tuple(SCALE * c for c in p.center), size=tuple(SCALE * r for r in p.size)) for p in _SNOWMAN
]


def main(out: Path = Path(__file__).resolve().parent / "example.ply", count: int = 6000, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    points, colors = primitives_to_points(SNOWMAN, count, generator)
    model = GaussianModel.from_points(points, OptimConfig(), colors=colors, opacity=0.95)
    write_gaussian_ply(out, model.to_raw())


if __name__ == "__main__":
    main()
