"""The ``render`` and ``mesh`` commands: a turntable, PNG views or a surface mesh of any INRIA-layout ``.ply``.

Their arguments are defined in :mod:`lucid_app.cli.main`; torch, the renderers and the mesher load inside the commands,
so importing this module costs ``python -m lucid_app --help`` nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from lucid_app.config import CameraConfig, OptimConfig
from lucid_app.io.run_layout import TURNTABLE_NAME, view_file

if TYPE_CHECKING:
    from tqdm import tqdm


def _progress(total: int, desc: str) -> tqdm:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False)


def cmd_render(args: argparse.Namespace) -> dict[str, Any]:
    """Turntable ``.mp4`` and a ring of PNG views of any INRIA-layout ``.ply``."""
    import torch

    from lucid_app.config.devices import resolve_device
    from lucid_app.io.files import check_output_dir
    from lucid_app.io.media import write_png
    from lucid_app.io.ply import read_gaussian_ply
    from lucid_app.render import make_renderer
    from lucid_app.render.cameras import orbit_cameras, turntable, turntable_rings
    from lucid_app.render.frames import render_frames, write_turntable
    from lucid_app.scene.gaussians import GaussianModel

    start = time.perf_counter()
    out = check_output_dir(args.out)
    device = resolve_device(args.device)
    data = read_gaussian_ply(args.ply)
    splats = GaussianModel.from_raw(data, OptimConfig(), device=device).splats()
    renderer = make_renderer(args.backend, device)
    out.mkdir(parents=True, exist_ok=True)
    cams = CameraConfig()
    radius = args.radius if args.radius is not None else cams.default_radius
    fovy = args.fovy if args.fovy is not None else cams.default_fovy_rad

    path = turntable(args.frames, args.size, args.size, radius, fovy,
                     turntable_rings(args.rings, cams.default_polar_deg))
    with _progress(args.frames, "turntable") as bar:
        frames = write_turntable(out / TURNTABLE_NAME, renderer, splats, path, args.fps, args.background, bar.update)

    n_views = args.views
    azimuth = torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    views = orbit_cameras(
        azimuth, torch.full((n_views,), cams.default_polar_deg), torch.full((n_views,), float(radius)),
        torch.full((n_views,), float(fovy)), args.size, args.size,
    )
    written = []
    for i, image in enumerate(render_frames(renderer, splats, views, args.background)):
        written.append(str(write_png(out / view_file(i), image)))
    return {
        "command": "render",
        "ply": str(args.ply),
        "n_gaussians": data.count,
        "sh_degree": data.sh_degree,
        "renderer": renderer.name,
        "frames": frames,
        "video": str(out / TURNTABLE_NAME),
        "views": written,
        "wall_s": round(time.perf_counter() - start, 3),
    }


def cmd_mesh(args: argparse.Namespace) -> dict[str, Any]:
    """Surface mesh (``.glb`` / ``.obj``, y up; vertex colours, or a baked texture with ``--texture``) of any
    INRIA-layout ``.ply``."""
    from tqdm import tqdm

    from lucid_app.io.files import check_output_file
    from lucid_app.io.ply import read_gaussian_ply
    from lucid_app.mesh import (
        DEFAULT_ISO,
        DEFAULT_RESOLUTION,
        MESH_FORMATS,
        MeshError,
        mesh_from_splats,
        write_mesh_files,
    )
    from lucid_app.mesh.bake import DEFAULT_BAKE_METHOD, check_bake_method
    from lucid_app.mesh.uv import check_texture_size
    from lucid_app.scene.gaussians import GaussianModel

    start = time.perf_counter()
    iso = DEFAULT_ISO if args.iso is None else args.iso
    texture_px = 0 if args.texture is None else check_texture_size(args.texture)
    method = check_bake_method(args.bake or DEFAULT_BAKE_METHOD)
    out = check_output_file(args.out)
    if out.suffix.lower() not in MESH_FORMATS:
        raise MeshError(f"--out {out}: the mesh format must be one of {', '.join(MESH_FORMATS)}, "
                        f"got {out.suffix or 'none'}")
    data = read_gaussian_ply(args.ply)
    splats = GaussianModel.from_raw(data, OptimConfig()).splats()
    with tqdm(total=data.count, desc="mesh density", unit="gaussian", file=sys.stderr, dynamic_ncols=True,
              leave=False) as bar:
        result = mesh_from_splats(splats, resolution=args.resolution or DEFAULT_RESOLUTION, iso=iso,
                                  max_faces=args.faces, progress=bar.update)
    written = write_mesh_files(out, result.mesh, splats, texture_px, method)
    return {
        "command": "mesh", "ply": str(args.ply), "n_gaussians": data.count, "resolution": result.resolution,
        "iso": iso, "vertices": len(result.mesh.vertices), "faces": len(result.mesh.faces),
        "watertight": bool(result.mesh.is_watertight),
        "components_kept": result.components_kept, "components_found": result.components_found,
        **written, "path": written["files"][0], "wall_s": round(time.perf_counter() - start, 3),
    }
