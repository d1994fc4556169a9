"""Textured mesh benchmark (``python bench/mesh.py texture ...``): fidelity, stripes and seconds of the baked texture.

For each scene x face budget: the watertight mesh (``mesh_from_splats(max_faces=F)``, vertex colours), its UV unwrap at
the texture size and one bake per method (``"normal"``, ``"views"``), each timed. Then:

- Fidelity: the Gaussians (our torch renderer) and each mesh (``lucid_app.mesh.raster.render_mesh``, unlit, 2 x 2
  supersampling, perspective-correct UVs, bilinear texture look-up) at the same 8 held-out cameras (seeded random
  views in the demo band: polar 60-100 deg, radius 4, fovy 0.6; none of them is a camera of the ``"views"`` bake), on
  white, at each size: PSNR and SSIM of the whole frame (``lucid_app.bench.metrics``), PSNR on the pixels both cover
  fully (``psnr_inside``: the colour, without the silhouette), the whole frame's PSNR with the Gaussians' own pixels
  wherever both cover fully (``psnr_colour_ceiling``: what a perfect texture could reach on this geometry, up to the
  partly covered pixels) and the silhouettes' IoU (the geometry, shared by every texture of one mesh). The
  vertex-coloured mesh of the same budget is scored beside the textured ones.
- Stripes (the striped ball only): ``STRIPE_SAMPLES`` seeded points on the mesh surface; the right stripe is that of
  the point's radial projection on the ball (``stripe_of``); accuracy = share of points whose colour is nearer the
  right stripe's colour than the other's; purity = share within a quarter of the red-blue distance of the right one.
  The ceiling (``stripes_ceiling``, on the vertex-colour case): the same scores of the Gaussians' own colour along
  the true normal at each point's radial projection on the ball (the bake on perfect geometry).

Scenes (Gaussians built, not trained): the demo objects (``lucid_app.bench.demo_dataset.object_splats``: surface samples
of the primitives as opaque isotropic Gaussians with kNN scales, seed 0), and the striped ball: ``--gaussians`` points
uniform on the unit sphere (seeded), the same kind of Gaussians, red where ``floor(z / 0.125)`` is even, else blue.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lucid_app.config import OptimConfig  # noqa: E402
from lucid_app.bench.demo_dataset import OPACITY, demo_cameras, demo_objects, object_splats, random_views  # noqa: E402
from lucid_app.scene.gaussians import GaussianModel  # noqa: E402
from lucid_app.mesh import mesh_from_splats  # noqa: E402
from lucid_app.mesh.bake import BAKE_METHODS, bake_texture, colors_along_normals  # noqa: E402
from lucid_app.mesh.raster import render_mesh, sample_bilinear, texture_shader, vertex_color_shader  # noqa: E402
from lucid_app.mesh.surface import DEFAULT_MIN_OPACITY, visible_gaussians  # noqa: E402
from lucid_app.mesh.textured import TexturedMesh  # noqa: E402
from lucid_app.mesh.uv import unwrap  # noqa: E402
from lucid_app.mesh.write_textured import write_textured_mesh  # noqa: E402
from lucid_app.bench.metrics import psnr, ssim  # noqa: E402
from lucid_app.render.base import Splats  # noqa: E402
from lucid_app.render.torch_ref import TorchRenderer  # noqa: E402

log = logging.getLogger("bench.mesh_texture")

STRIPE_WIDTH = 0.125
RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
STRIPE_SAMPLES = 100_000
HELD_OUT_VIEWS = 8
HELD_OUT_SEED = 1234
WHITE = (1.0, 1.0, 1.0)
FULL = 0.99  # a pixel "covered" by the mesh's supersamples / the Gaussians' alpha
SCENES = ("toy_car", "snowman", "potted_flower", "striped_ball")


def stripe_of(points: np.ndarray) -> np.ndarray:
    """[P] 0 (red) or 1 (blue): the stripe of each point's radial projection on the unit ball."""
    z = points[:, 2] / np.maximum(np.linalg.norm(points, axis=1), 1e-12)
    return (np.floor(z / STRIPE_WIDTH).astype(np.int64) % 2).astype(np.int64)


def striped_ball(n: int, seed: int) -> Splats:
    """``n`` opaque isotropic Gaussians uniform on the unit sphere, striped red / blue every ``STRIPE_WIDTH`` in z."""
    g = torch.Generator().manual_seed(seed)
    points = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    colors = torch.tensor([RED, BLUE])[torch.as_tensor(stripe_of(points.double().numpy()))]
    splats = GaussianModel.from_points(points, OptimConfig(), colors=colors, opacity=OPACITY).splats()
    return Splats(*(t.detach() for t in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)),
                  sh_degree=splats.sh_degree)


def scene_splats(name: str, n: int, seed: int = 0) -> Splats:
    if name == "striped_ball":
        return striped_ball(n, seed)
    objects = {obj.name: obj for obj in demo_objects()}
    return object_splats(objects[name], n, torch.Generator().manual_seed(seed))


def stripe_scores(colors: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy and purity (module docstring) of colours [P, 3] in [0, 1] against stripes ``truth`` [P]."""
    palette = np.array([RED, BLUE])
    to_right = np.linalg.norm(colors - palette[truth], axis=1)
    to_wrong = np.linalg.norm(colors - palette[1 - truth], axis=1)
    gap = float(np.linalg.norm(palette[0] - palette[1]))
    return {"accuracy": round(float((to_right < to_wrong).mean()), 4),
            "purity": round(float((to_right < 0.25 * gap).mean()), 4)}


def surface_points(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, ...]:
    """``count`` area-uniform points: (face [P], barycentrics [P, 3], points [P, 3]), from a numpy Generator."""
    rng = np.random.default_rng(seed)
    corners = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    face = rng.choice(len(faces), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    bary = np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=1)
    return face, bary, np.einsum("pk,pkc->pc", bary, corners[face])


def fidelity(splats: Splats, vertices: np.ndarray, faces: np.ndarray, shader, sizes: list[int],
             reference: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Scores of one mesh against the Gaussians' renders ``reference`` {size: (rgb, alpha)} (module docstring)."""
    azimuth, polar = random_views(HELD_OUT_VIEWS, torch.Generator().manual_seed(HELD_OUT_SEED))
    out = {}
    for size in sizes:
        rgb, cover = render_mesh(vertices, faces, demo_cameras(azimuth, polar, size), shader, WHITE)
        ref, alpha = reference[size]
        inside = (cover >= FULL) & (alpha >= FULL)
        mse = float(((rgb - ref) ** 2)[inside].mean())
        union = ((cover > 0.5) | (alpha > 0.5)).sum()
        # The colour's ceiling on this geometry: the frame with the Gaussians' own pixels wherever both cover fully.
        best = np.where(inside[..., None], ref, rgb)
        out[str(size)] = {
            "psnr": round(psnr(torch.from_numpy(rgb), torch.from_numpy(ref)), 2),
            "psnr_colour_ceiling": round(psnr(torch.from_numpy(best), torch.from_numpy(ref)), 2),
            "ssim": round(ssim(torch.from_numpy(rgb), torch.from_numpy(ref)), 4),
            "psnr_inside": round(10.0 * math.log10(1.0 / max(mse, 1e-12)), 2),
            "silhouette_iou": round(float(((cover > 0.5) & (alpha > 0.5)).sum() / max(union, 1)), 4),
        }
    return out


def gaussian_renders(splats: Splats, sizes: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    azimuth, polar = random_views(HELD_OUT_VIEWS, torch.Generator().manual_seed(HELD_OUT_SEED))
    renders = {}
    for size in sizes:
        cams = demo_cameras(azimuth, polar, size)
        with torch.no_grad():
            out = TorchRenderer().render(splats, cams, torch.ones(len(cams), 3))
        renders[size] = (out.rgb.numpy(), out.alpha[..., 0].numpy())
    return renders


def run_scene(name: str, n: int, faces: int, texture_px: int, methods: list[str], sizes: list[int],
              renders: dict[int, tuple[np.ndarray, np.ndarray]], splats: Splats) -> list[dict]:
    """Every method's case of one scene at one face budget (the vertex-coloured mesh first)."""
    start = time.perf_counter()
    mesh = mesh_from_splats(splats, max_faces=faces).mesh
    mesh_s = time.perf_counter() - start
    vertices, tri = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    colors = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    base = {"scene": name, "gaussians": n, "faces": len(tri), "watertight": bool(mesh.is_watertight)}
    cases = [{**base, "texture": "vertex colours", "seconds": {"mesh": round(mesh_s, 2)},
              "fidelity": fidelity(splats, vertices, tri, vertex_color_shader(tri, colors), sizes, renders)}]
    face, bary, points = surface_points(vertices, tri, STRIPE_SAMPLES, seed=0)
    if name == "striped_ball":
        truth = stripe_of(points)
        cases[0]["stripes"] = stripe_scores(np.einsum("pk,pkc->pc", bary, colors[tri[face]]), truth)
        # The ceiling: the Gaussians' own colour along the true normal at the point's radial projection on the ball.
        on_ball = points / np.linalg.norm(points, axis=1, keepdims=True)
        field = colors_along_normals(on_ball, on_ball, *visible_gaussians(splats, DEFAULT_MIN_OPACITY))
        cases[0]["stripes_ceiling"] = stripe_scores(field, truth)
    start = time.perf_counter()
    uv = unwrap(vertices, tri, texture_px)
    unwrap_s = time.perf_counter() - start
    for method in methods:
        start = time.perf_counter()
        baked = bake_texture(uv, splats, method)
        bake_s = time.perf_counter() - start
        image = baked.image / 255.0
        case = {**base, "texture": f"{texture_px} px, {method}",
                "seconds": {"mesh": round(mesh_s, 2), "unwrap": round(unwrap_s, 2), "bake": round(bake_s, 2)},
                "uv_coverage": round(baked.coverage, 4), "unseen": round(baked.unseen, 4),
                "seam_edges": uv.seam_edges, "charts": uv.charts,
                "fidelity": fidelity(splats, uv.vertices, uv.faces, texture_shader(uv.faces, uv.uvs, image), sizes,
                                     renders)}
        if name == "striped_ball":
            uvs = np.einsum("pk,pkc->pc", bary, uv.uvs[uv.faces[face]])
            case["stripes"] = stripe_scores(sample_bilinear(image, uvs), truth)
        cases.append(case)
        log.info("%s", case)
    return cases


def speed(n: int, faces: int, texture_px: int) -> dict:
    """The whole textured export of the toy car (mesh, unwrap, bake, .glb) from ``n`` Gaussians, timed."""
    from lucid_app.mesh.textured import texture_mesh

    splats = scene_splats("toy_car", n)
    start, cpu_start = time.perf_counter(), time.process_time()
    mesh = mesh_from_splats(splats, max_faces=faces).mesh
    textured: TexturedMesh = texture_mesh(mesh, splats, texture_px)
    with tempfile.TemporaryDirectory() as folder:
        write_textured_mesh(Path(folder) / "car.glb", textured)
    # CPU seconds (all threads) beside the wall clock: on a shared machine the wall clock includes waiting.
    return {"scene": "toy_car", "gaussians": n, "faces": len(mesh.faces), "texture_px": texture_px,
            "seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(time.process_time() - cpu_start, 2),
            **textured.report()}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/mesh.py texture", description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=SCENES)
    parser.add_argument("--gaussians", type=int, default=20_000)
    parser.add_argument("--faces", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--texture-px", type=int, nargs="+", default=[512, 1024],
                        help="texture size per face budget (one value: all budgets)")
    parser.add_argument("--methods", nargs="+", default=list(BAKE_METHODS), choices=BAKE_METHODS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512], help="held-out render sizes (px)")
    parser.add_argument("--speed", action="store_true",
                        help="only time the 20k-face, 1024 px export of the car from --gaussians Gaussians")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    meta = {"benchmark": "mesh_texture", "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.speed:
        print(json.dumps({**meta, "speed": speed(args.gaussians, 20_000, 1024)}))
        return
    sizes_px = args.texture_px * len(args.faces) if len(args.texture_px) == 1 else args.texture_px
    cases = []
    for name in args.scenes:
        splats = scene_splats(name, args.gaussians)
        renders = gaussian_renders(splats, args.sizes)
        for faces, texture_px in zip(args.faces, sizes_px, strict=True):
            cases += run_scene(name, args.gaussians, faces, texture_px, args.methods, args.sizes, renders, splats)
    print(json.dumps({**meta, "cases": cases}))

