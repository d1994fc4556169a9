"""Mesh export benchmark: time, peak memory and faces of ``mesh_from_splats`` on synthetic Gaussians.

Prints one JSON object (last line of stdout). Each case (Gaussian count x grid resolution) runs in its own
subprocess so that its peak resident set size (``ru_maxrss``) is its own; ``baseline_rss_mb`` is the RSS just
before meshing (interpreter, torch, the scene).

Scene: N Gaussians uniform in a ball of radius 1, random rotations, scales uniform in [0.5, 1] x the mean
spacing (4.19 / N)^(1/3) per axis, opacities 0.1-0.9, random colours; default iso-level (0.5).

    python bench/mesh.py --gaussians 10000 100000 --resolutions 128 256

``python bench/mesh.py texture ...`` benchmarks the textured export instead (``bench/mesh_texture.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lucid_app.mesh import DEFAULT_ISO, mesh_from_splats  # noqa: E402
from lucid_app.render.base import Splats  # noqa: E402
from lucid_app.scene.gaussians import rgb_to_sh_dc  # noqa: E402

log = logging.getLogger("bench.mesh")


def make_scene(n: int, seed: int = 0) -> Splats:
    """N Gaussians in the unit ball (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = direction * torch.rand(n, 1, generator=g) ** (1.0 / 3.0)
    spacing = (4.0 / 3.0 * math.pi / n) ** (1.0 / 3.0)
    return Splats(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        scales=spacing * (0.5 + 0.5 * torch.rand(n, 3, generator=g)),
        opacities=0.1 + 0.8 * torch.rand(n, generator=g),
        sh=rgb_to_sh_dc(torch.rand(n, 3, generator=g))[:, None, :],
        sh_degree=0,
    )


def run_case(n: int, resolution: int) -> dict:
    splats = make_scene(n)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    start = time.perf_counter()
    result = mesh_from_splats(splats, resolution=resolution)
    seconds = time.perf_counter() - start
    return {
        "gaussians": n, "resolution": resolution, "grid": list(result.grid.shape), "seconds": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "baseline_rss_mb": round(baseline, 1), "vertices": len(result.mesh.vertices),
        "faces": len(result.mesh.faces), "components_kept": result.components_kept,
    }


def main() -> None:
    if sys.argv[1:2] == ["texture"]:
        from mesh_texture import main as texture_main  # bench/ is the script's folder, first on sys.path

        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
        texture_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--case", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.case is not None:
        print(json.dumps(run_case(*args.case)))
        return
    cases = []
    for n in args.gaussians:
        for resolution in args.resolutions:
            out = subprocess.run(
                [sys.executable, __file__, "--case", str(n), str(resolution), "--threads", str(args.threads)],
                check=True, capture_output=True, text=True,
            )
            cases.append(json.loads(out.stdout.strip().splitlines()[-1]))
            log.info("%s", cases[-1])
    print(json.dumps({
        "benchmark": "mesh", "iso": DEFAULT_ISO, "torch_threads": args.threads or torch.get_num_threads(),
        "torch": torch.__version__, "cases": cases,
    }))


if __name__ == "__main__":
    main()
