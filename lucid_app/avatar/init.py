"""Initial Gaussians on the posed body's surface (DESIGN §4 init: mid-grey, opacity from the config, kNN scales)."""

from __future__ import annotations

import torch

from lucid_app.avatar.body import Body
from lucid_app.config import InitConfig, OptimConfig
from lucid_app.scene.gaussians import GaussianModel


def sample_surface(
    vertices: torch.Tensor, faces: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` points uniform by area on a triangle mesh.

    Args:
        vertices: [V, 3] positions.
        faces: [F, 3] vertex indices.
        count: number of points.
        generator: the source of every draw (CPU generator).

    Returns:
        [count, 3] float32 points: a triangle drawn with probability ∝ its area, then a uniform point in it
        (barycentric (1 − √u, √u (1 − v), √u v)).
    """
    tri = vertices.float()[faces]  # [F, 3, 3]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
    if count <= 0 or float(area.sum()) <= 0.0:
        raise ValueError(f"cannot sample {count} points on a mesh of total area {float(area.sum())}")
    index = torch.multinomial(area.cpu(), count, replacement=True, generator=generator)
    u = torch.rand(count, 1, generator=generator).sqrt()
    v = torch.rand(count, 1, generator=generator)
    chosen = tri[index.to(tri.device)]
    return (1.0 - u) * chosen[:, 0] + u * (1.0 - v) * chosen[:, 1] + u * v * chosen[:, 2]


def avatar_gaussians(
    body: Body, init: InitConfig, optim: OptimConfig, generator: torch.Generator, device: torch.device | str = "cpu"
) -> GaussianModel:
    """``init.num_points`` Gaussians on the body surface, colour ``init.color`` (mid-grey by default), opacity
    ``init.opacity``, scales from the mean distance to the 3 nearest neighbours."""
    points = sample_surface(body.vertices, body.faces, init.num_points, generator)
    return GaussianModel.from_points(
        points, optim, opacity=init.opacity, sh_degree=init.sh_degree, default_color=init.color, device=device
    )
