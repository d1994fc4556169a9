"""Coloured primitives turned into Gaussians: the building blocks of the offline demo objects.

Points are shared between primitives in proportion to their surface areas, and every sample becomes a small, nearly
opaque, isotropic Gaussian of the primitive's colour. Everything is in the world frame of ``cameras.py``
(z up, the object's front faces +y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class Primitive:
    """A coloured shape. ``size`` is (rx, ry, rz) radii for spheres/ellipsoids and half-extents for boxes;
    cylinders and cones use (radius, radius, half-height) along z; a cone's apex is at +half-height.
    ``axis`` rotates the local z axis onto the given direction (e.g. a cone pointing to the front: (0, 1, 0)).
    """

    kind: Literal["ellipsoid", "box", "cylinder", "cone"]
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    color: tuple[float, float, float]
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)


def surface_area(p: Primitive) -> float:
    """Approximate surface area (Knud Thomsen's formula for ellipsoids), used to share points fairly."""
    a, b, c = p.size
    if p.kind == "ellipsoid":
        k = 1.6075
        return 4 * math.pi * (((a * b) ** k + (a * c) ** k + (b * c) ** k) / 3) ** (1 / k)
    if p.kind == "box":
        return 8 * (a * b + a * c + b * c)
    if p.kind == "cylinder":
        return 2 * math.pi * a * (2 * c) + 2 * math.pi * a * a
    slant = math.hypot(a, 2 * c)
    return math.pi * a * slant + math.pi * a * a


def _rotation_to(axis: tuple[float, float, float]) -> torch.Tensor:
    """[3, 3] rotation taking +z onto ``axis`` (Rodrigues' formula)."""
    z = torch.tensor([0.0, 0.0, 1.0])
    v = torch.nn.functional.normalize(torch.tensor(axis, dtype=torch.float32), dim=0)
    cross = torch.linalg.cross(z, v)
    sin, cos = cross.norm(), torch.dot(z, v)
    if sin < 1e-8:
        return torch.eye(3) if cos > 0 else torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    k = cross / sin
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return torch.eye(3) + sin * kx + (1 - cos) * (kx @ kx)


def sample_surface(p: Primitive, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points on the surface of ``p`` -> [n, 3] world coordinates."""
    a, b, c = p.size
    u = torch.rand(n, 2, generator=generator)
    if p.kind == "ellipsoid":
        d = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
        local = d * torch.tensor([a, b, c])
    elif p.kind == "box":
        areas = torch.tensor([b * c, b * c, a * c, a * c, a * b, a * b])
        face = torch.multinomial(areas, n, replacement=True, generator=generator)
        local = (u.new_empty(n, 3).uniform_(-1, 1, generator=generator)) * torch.tensor([a, b, c])
        axis = face // 2
        sign = (face % 2).float() * 2 - 1
        local[torch.arange(n), axis] = sign * torch.tensor([a, b, c])[axis]
    else:
        side_area = surface_area(p) - math.pi * a * a * (2 if p.kind == "cylinder" else 1)
        on_side = torch.rand(n, generator=generator) * surface_area(p) < side_area
        theta = 2 * math.pi * u[:, 0]
        if p.kind == "cylinder":
            h = (2 * u[:, 1] - 1) * c
            rad_side = torch.ones(n)
            cap_z = torch.where(torch.rand(n, generator=generator) < 0.5, -c, c)
        else:
            # Cone: radius shrinks linearly to 0 at the apex; area density ∝ radius, so sample sqrt.
            t = 1 - torch.sqrt(u[:, 1])
            h = -c + 2 * c * t
            rad_side = 1 - t
            cap_z = torch.full((n,), -c)
        disc = torch.sqrt(torch.rand(n, generator=generator))
        radius = torch.where(on_side, rad_side, disc) * a
        z = torch.where(on_side, h, cap_z)
        local = torch.stack([radius * torch.cos(theta), radius * torch.sin(theta), z], dim=-1)
    return local @ _rotation_to(p.axis).T + torch.tensor(p.center)


def primitives_to_points(
    primitives: list[Primitive], count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``count`` surface points over all primitives (by area) -> (points [N, 3], colours [N, 3])."""
    areas = torch.tensor([surface_area(p) for p in primitives])
    shares = torch.floor(areas / areas.sum() * count).long().clamp_min(1)
    points, colors = [], []
    for p, n in zip(primitives, shares.tolist()):
        points.append(sample_surface(p, n, generator))
        colors.append(torch.tensor(p.color).expand(n, 3))
    return torch.cat(points), torch.cat(colors)
