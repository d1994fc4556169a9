"""The renderer protocol shared by every backend.

A renderer is a stateless function of activated Gaussian tensors and a camera batch. It never sees the
optimiser or the densification state; it returns what the trainer and densification need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from lucid_app.render.cameras import CameraBatch


@dataclass
class Splats:
    """Activated Gaussian parameters, the renderer's input.

    Attributes:
        means: [N, 3] world-space centres.
        quats: [N, 4] rotations as (w, x, y, z) quaternions; need not be normalised.
        scales: [N, 3] positive standard deviations along the rotated axes (world units).
        opacities: [N] in (0, 1).
        sh: [N, K, 3] spherical-harmonics coefficients, K = (sh_degree + 1) ** 2; band 0 is the DC term.
        sh_degree: degree of the SH coefficients actually used (0..3).
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor
    sh_degree: int = 0

    @property
    def count(self) -> int:
        return int(self.means.shape[0])


@dataclass
class RenderOutput:
    """What every renderer returns for a batch of C views at H x W.

    Attributes:
        rgb: [C, H, W, 3] composited over the per-view background.
        alpha: [C, H, W, 1] accumulated opacity.
        depth: [C, H, W, 1] alpha-weighted camera-space depth (z), i.e. sum_i w_i z_i (not normalised by alpha).
        means2d: [C, N, 2] projected centres in pixels; a leaf of the graph whose ``.grad`` holds the
            screen-space gradient after ``backward()`` (``retain_grad`` already called when it requires grad).
        radii: [C, N] screen-space radius in pixels of each Gaussian's footprint, 0 where not rendered.
        width, height: image size in pixels.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    means2d: torch.Tensor
    radii: torch.Tensor
    width: int
    height: int


class Renderer(Protocol):
    """A differentiable Gaussian-splatting rasteriser."""

    name: str

    def render(self, splats: Splats, cameras: CameraBatch, backgrounds: torch.Tensor) -> RenderOutput:
        """Render ``splats`` from every camera.

        Args:
            splats: activated Gaussians (N of them).
            cameras: C cameras of one image size.
            backgrounds: [C, 3] background colour per view, in [0, 1].

        Returns:
            RenderOutput for the C views.
        """
        ...
