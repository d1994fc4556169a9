"""Renderer benchmark: forward/backward time and peak memory of the torch renderer vs a naive dense compositor.

Prints one JSON object (last line of stdout). Each variant runs in its own subprocess so that its peak memory
is its own: on CPU we report the process's peak resident set size (``ru_maxrss``, which includes the Python
interpreter, torch and the scene, reported too as ``baseline_rss_mb`` measured just before the first render);
on CUDA ``torch.cuda.max_memory_allocated``.

    python bench/render.py --gaussians 20000 --views 4 --size 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lucid_app.render import make_renderer  # noqa: E402
from lucid_app.render.base import Splats  # noqa: E402
from lucid_app.render.cameras import CameraBatch, orbit_cameras  # noqa: E402
from lucid_app.render.projection import project_gaussians  # noqa: E402
from lucid_app.render.sh import sh_to_rgb  # noqa: E402
from lucid_app.render.torch_ref import ALPHA_MAX, ALPHA_MIN, T_MIN, TorchRenderer  # noqa: E402

log = logging.getLogger("bench.render")
NAIVE_MAX_ELEMENTS = 1 << 23  # pixels x Gaussians per checkpointed chunk of the naive compositor
NAIVE_NOTE = (
    "naive = every pixel x every Gaussian (depth-sorted), plain autograd, same projection/SH/alpha rules; "
    f"pixels processed in chunks of floor({NAIVE_MAX_ELEMENTS} / N) pixels, each chunk wrapped in "
    "torch.utils.checkpoint so only one chunk's [pixels, N] tensors are alive (otherwise it needs tens of GB); "
    "its peak RSS is inflated by glibc keeping freed ~32 MB chunks on the heap (MALLOC_MMAP_THRESHOLD_=65536 "
    "cuts it ~4x at 64^2 x 1 view but makes it ~2.5x slower)"
)


def make_scene(n: int, views: int, size: int, device: torch.device, seed: int = 0) -> tuple[Splats, CameraBatch]:
    """Gaussians uniform in a unit ball (scales 0.02-0.05, opacities 0.1-0.9); orbit cameras at radius 4."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = d * torch.rand(n, 1, generator=g) ** (1.0 / 3.0)
    splats = Splats(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        scales=0.02 + 0.03 * torch.rand(n, 3, generator=g),
        opacities=0.1 + 0.8 * torch.rand(n, generator=g),
        sh=0.5 * torch.randn(n, 1, 3, generator=g),
        sh_degree=0,
    )
    splats = Splats(*(getattr(splats, f).to(device).requires_grad_(True)
                      for f in ("means", "quats", "scales", "opacities", "sh")), 0)
    azimuth = torch.arange(views, dtype=torch.float32) * (360.0 / views) - 180.0
    cams = orbit_cameras(azimuth, torch.full((views,), 80.0), torch.full((views,), 4.0),
                         torch.full((views,), 0.6), size, size).to(device)
    return splats, cams


def _naive_chunk(pix, means2d, conics, opac, feats):  # noqa: ANN001, ANN202
    """[P, 2] pixels vs all [N] Gaussians (front to back) -> [P, 5] = sum_i w_i (r, g, b, z, 1)."""
    d = pix[:, None, :] - means2d[None]
    a, b, c = conics.unbind(-1)
    q = a * d[..., 0] ** 2 + 2 * b * d[..., 0] * d[..., 1] + c * d[..., 1] ** 2
    og = opac * torch.exp(-0.5 * q)
    alpha = torch.where(og < ALPHA_MIN, torch.zeros_like(og), og.clamp(max=ALPHA_MAX))
    t_incl = torch.cumprod(1 - alpha, dim=-1)
    t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], dim=-1)
    w = torch.where(t_incl <= T_MIN, torch.zeros_like(alpha), alpha * t_excl)
    return w @ feats


class NaiveRenderer:
    """Dense all-pairs compositor (see NAIVE_NOTE); returns (rgb, alpha, depth) like RenderOutput's fields."""

    name = "naive"

    def render(self, splats: Splats, cams: CameraBatch, bg: torch.Tensor):  # noqa: ANN201
        proj = project_gaussians(splats, cams.viewmats, cams.Ks, cams.width, cams.height)
        colors = sh_to_rgb(splats.sh_degree, splats.sh, splats.means, cams.centers)
        jj, ii = torch.meshgrid(torch.arange(cams.width) + 0.5, torch.arange(cams.height) + 0.5, indexing="xy")
        pix = torch.stack([jj, ii], -1).reshape(-1, 2).to(splats.means)
        chunk = max(1, NAIVE_MAX_ELEMENTS // splats.count)
        images = []
        for v in range(len(cams)):
            keep = proj.in_front[v].nonzero().squeeze(1)
            keep = keep[torch.argsort(proj.depths[v, keep].detach())]
            feats = torch.cat([colors[v, keep], proj.depths[v, keep, None], torch.ones_like(keep[:, None])], -1)
            args = (proj.means2d[v, keep], proj.conics[v, keep], splats.opacities[keep], feats)
            acc = torch.cat([checkpoint(_naive_chunk, pix[i:i + chunk], *args, use_reentrant=False)
                             for i in range(0, pix.shape[0], chunk)])
            images.append(acc.reshape(cams.height, cams.width, 5))
        acc = torch.stack(images)
        return acc[..., :3] + (1 - acc[..., 4:]) * bg[:, None, None], acc[..., 4:], acc[..., 3:4]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    """Time one renderer in this process; returns its figures."""
    device = torch.device(args.device)
    splats, cams = make_scene(args.gaussians, args.views, args.size, device)
    bg = torch.ones(args.views, 3, device=device)
    renderer = {"torch": lambda: TorchRenderer(tile_size=args.tile_size), "naive": NaiveRenderer,
                "gsplat": lambda: make_renderer("gsplat", device)}[variant]()
    baseline = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fwd, bwd = [], []
    # The naive baseline is not warmed up: one of its iterations takes minutes, warm-up effects are noise there.
    warmup = args.warmup and variant != "naive"
    for i in range(args.repeats + (1 if warmup else 0)):
        for p in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh):
            p.grad = None
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        out = renderer.render(splats, cams, bg)
        rgb, alpha, depth = (out.rgb, out.alpha, out.depth) if hasattr(out, "rgb") else out
        sync()
        t1 = time.perf_counter()
        (rgb.mean() + alpha.mean() + 0.1 * depth.mean()).backward()
        sync()
        t2 = time.perf_counter()
        if i >= (1 if warmup else 0):
            fwd.append(1e3 * (t1 - t0))
            bwd.append(1e3 * (t2 - t1))
        log.info("%s iteration %d: forward %.0f ms, backward %.0f ms", variant, i, 1e3 * (t1 - t0), 1e3 * (t2 - t1))
    result = {
        "forward_ms_median": round(statistics.median(fwd), 1), "forward_ms_min": round(min(fwd), 1),
        "backward_ms_median": round(statistics.median(bwd), 1), "backward_ms_min": round(min(bwd), 1),
        "total_ms_median": round(statistics.median(f + b for f, b in zip(fwd, bwd)), 1),
        "repeats": len(fwd),
    }
    if device.type == "cuda":
        result["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        result["baseline_rss_mb"] = round(baseline, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaussians", type=int, default=20000)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="image height = width in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-repeats", type=int, default=None, help="repeats for the slow naive baseline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile-size", type=int, default=TorchRenderer().tile_size, help="torch renderer tile")
    parser.add_argument("--variants", default=None, help="comma list of torch,naive,gsplat (default: all that run)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.worker:
        if args.worker == "naive" and args.naive_repeats:
            args.repeats = args.naive_repeats
        print(json.dumps(run_variant(args.worker, args)))
        return
    default = ["torch", "naive"] + (["gsplat"] if torch.device(args.device).type == "cuda" else [])
    variants = args.variants.split(",") if args.variants else default
    report: dict = {
        "benchmark": "render", "gaussians": args.gaussians, "views": args.views,
        "resolution": [args.size, args.size], "device": args.device, "tile_size": args.tile_size,
        "torch_threads": torch.get_num_threads(),
        "loss": "mean(rgb) + mean(alpha) + 0.1 mean(depth), backward into means/quats/scales/opacities/sh",
        "memory": "peak RSS of a fresh subprocess per variant (ru_maxrss), baseline = RSS before first render"
        if torch.device(args.device).type == "cpu" else "torch.cuda.max_memory_allocated per subprocess",
        "notes": NAIVE_NOTE,
    }
    for v in variants:
        cmd = [sys.executable, __file__, "--worker", v] + sys.argv[1:]
        res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        report[v] = json.loads(res.stdout.strip().splitlines()[-1])
    if "torch" in report and "naive" in report:
        report["speedup_torch_vs_naive"] = round(report["naive"]["total_ms_median"]
                                                 / report["torch"]["total_ms_median"], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
