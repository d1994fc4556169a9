"""Initial Gaussians: volumes, point clouds, 3DGS files and mesh surfaces (DESIGN §4: opacity 0.1, mid-grey,
scales from the mean distance to the 3 nearest neighbours), and Point-E's text-to-points when installed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lucid_app.config import ConfigError, InitConfig, OptimConfig, replace
from lucid_app.io.ply import is_gaussian_ply, read_gaussian_ply, read_point_cloud
from lucid_app.scene.gaussians import GaussianModel
from lucid_app.scene.pointe_init import INSTALL_HINT, pointe_available, pointe_points

logger = logging.getLogger(__name__)



def sample_volume(
    shape: str, count: int, size: tuple[float, float, float], generator: torch.Generator
) -> torch.Tensor:
    """``count`` points uniform in a volume centred on the origin, [count, 3] float32 (on the generator's device).

    Args:
        shape: ``"sphere"`` (ball of radius ``size[0]``), ``"ellipsoid"`` (semi-axes ``size``) or ``"box"``
            (half-extents ``size``).
        size: half-extents along x, y, z.
    """
    device = generator.device
    half = torch.tensor(size, dtype=torch.float32, device=device)
    if shape == "box":
        return (2.0 * torch.rand(count, 3, generator=generator, device=device) - 1.0) * half
    if shape not in ("sphere", "ellipsoid"):
        raise ConfigError(f"init.shape={shape!r} is not a volume; volumes: sphere, ellipsoid, box")
    # Uniform in the unit ball: isotropic direction, radius with density ~ r^2 (inverse CDF u^(1/3)).
    direction = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, device=device), dim=-1)
    radius = torch.rand(count, 1, generator=generator, device=device) ** (1.0 / 3.0)
    unit = direction * radius
    return unit * (half[0] if shape == "sphere" else half)


def seed_from(generator: torch.Generator) -> int:
    """A 31-bit seed drawn from ``generator``, for libraries that take an integer seed (trimesh, numpy)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())


def sample_mesh_surface(
    path: str | Path, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` points uniform (by area) on a mesh surface (.obj, .glb, .ply, ... via trimesh).

    Returns:
        points [count, 3] float32, and colours [count, 3] in [0, 1] interpolated from vertex colours (None when
        the mesh has no vertex colours).
    """
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"init.path: no such mesh file {p}")
    try:
        mesh = trimesh.load(str(p), force="mesh")
    except (ValueError, KeyError, IndexError, OSError) as err:
        raise ConfigError(f"init.path: cannot load {p} as a mesh: {err}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ConfigError(f"init.path: {p} has no triangles to sample (a point cloud? use init.shape='ply')")
    points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed_from(generator))
    colors = None
    if mesh.visual.kind == "vertex":
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face_index], points)
        vertex_rgb = np.asarray(mesh.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
        colors = torch.as_tensor(
            np.einsum("nk,nkc->nc", bary, vertex_rgb[mesh.faces[face_index]]).clip(0.0, 1.0), dtype=torch.float32
        )
    return torch.as_tensor(np.asarray(points), dtype=torch.float32), colors


def init_gaussians(
    init: InitConfig, optim: OptimConfig, generator: torch.Generator, device: torch.device | str = "cpu"
) -> GaussianModel:
    """Initial Gaussians for ``init.shape`` (DESIGN §4: opacity 0.1, mid-grey, kNN scales).

    - ``sphere`` / ``ellipsoid`` / ``box``: ``init.num_points`` uniform points in the volume (``init.size``);
    - ``ply``: a 3DGS file keeps all its parameters; a plain point cloud gives the points (and, with
      ``init.use_file_colors``, their colours);
    - ``mesh``: ``init.num_points`` points on the surface of ``init.path`` (vertex colours as for ``ply``);
    - ``pointe``: Point-E's cloud for ``init.prompt`` in a ball of radius ``init.size[0]``, with its colours, when
      the optional ``point_e`` package is installed; otherwise ``init.shape_fallback`` with a logged notice.
    """
    colors = None
    if init.shape in ("sphere", "ellipsoid", "box"):
        points = sample_volume(init.shape, init.num_points, init.size, generator)
    elif init.shape == "ply":
        # InitConfig refuses ``ply`` and ``mesh`` without a path.
        if is_gaussian_ply(init.path):
            return GaussianModel.from_raw(read_gaussian_ply(init.path), optim, init.sh_degree, device)
        cloud = read_point_cloud(init.path)
        points = torch.as_tensor(cloud.points)
        if cloud.colors is not None:
            colors = torch.as_tensor(cloud.colors)
    elif init.shape == "mesh":
        points, colors = sample_mesh_surface(init.path, init.num_points, generator)
    elif init.shape == "pointe":
        if not pointe_available():
            logger.warning(
                "init.shape='pointe' but Point-E is not installed (%s); falling back to init.shape_fallback=%r",
                INSTALL_HINT, init.shape_fallback,
            )
            return init_gaussians(replace(init, shape=init.shape_fallback), optim, generator, device)
        points, colors = pointe_points(init.prompt, init.num_points, init.size[0], generator, device)
        init = replace(init, use_file_colors=True)
    else:
        raise ConfigError(f"init.shape={init.shape!r}; valid shapes: sphere, ellipsoid, box, ply, mesh, pointe")
    if points.shape[0] == 0:
        raise ConfigError(f"init.shape={init.shape!r} produced no points")
    return GaussianModel.from_points(
        points,
        optim,
        colors=colors if init.use_file_colors else None,
        opacity=init.opacity,
        sh_degree=init.sh_degree,
        default_color=init.color,
        device=device,
    )
