"""The gsplat CUDA rasteriser behind our :class:`~lucid_app.render.base.Renderer` contract (name ``"gsplat"``).

Only gsplat's public ``gsplat.rasterization`` is used, imported when the renderer is built, so importing this
module never needs gsplat or CUDA. Differences from the torch renderer that remain by design of gsplat 1.5.3:
alpha is clamped at 0.999 (ours 0.99), and its radii are per-axis 3.33 sigma extents (we report the larger).
"""

from __future__ import annotations

import torch

from lucid_app.render.base import RenderOutput, Splats
from lucid_app.render.cameras import CameraBatch
from lucid_app.render.projection import LOWPASS_PX2, NEAR_PLANE

INSTALL_HINT = "pip install gsplat==1.5.3 (or: pip install 'lucid-app[cuda]')"


class GsplatRenderer:
    """CUDA rasterisation with gsplat (float32 only).

    Args:
        device: a CUDA device; anything else raises ``ValueError``.
    """

    name = "gsplat"

    def __init__(self, device: torch.device | str = "cuda") -> None:
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError(f"the 'gsplat' renderer needs a CUDA device, got {device}; use 'torch' (or 'auto')")
        try:
            from gsplat import rasterization
        except ImportError as err:
            raise ImportError(f"the 'gsplat' renderer needs the gsplat package: {INSTALL_HINT}") from err
        self._rasterization = rasterization
        self.device = device

    def render(self, splats: Splats, cameras: CameraBatch, backgrounds: torch.Tensor) -> RenderOutput:
        """Render ``splats`` from every camera; see :class:`~lucid_app.render.base.Renderer`."""
        if not splats.means.is_cuda:
            raise ValueError("the 'gsplat' renderer needs the splats on a CUDA device")
        if splats.means.dtype != torch.float32:
            raise ValueError(f"the 'gsplat' renderer supports float32 only, got {splats.means.dtype}")
        device = splats.means.device
        cams = cameras.to(device, torch.float32)
        out, alpha, info = self._rasterization(
            means=splats.means,
            quats=splats.quats,
            scales=splats.scales,
            opacities=splats.opacities,
            colors=splats.sh,
            viewmats=cams.viewmats,
            Ks=cams.Ks,
            width=cameras.width,
            height=cameras.height,
            near_plane=NEAR_PLANE,
            eps2d=LOWPASS_PX2,
            sh_degree=splats.sh_degree,
            packed=False,  # per-(view, Gaussian) means2d [C, N, 2] and radii, as the contract needs
            backgrounds=backgrounds.to(device, torch.float32),
            render_mode="RGB+D",  # "D" is sum_i w_i z_i (not normalised), our depth definition
            rasterize_mode="classic",
        )
        means2d = info["means2d"]
        if means2d.requires_grad:
            means2d.retain_grad()
        radii = info["radii"]
        if radii.dim() == 3:  # gsplat >= 1.5: per-axis radii [C, N, 2]
            radii = radii.amax(dim=-1)
        return RenderOutput(
            rgb=out[..., :3],
            alpha=alpha,
            depth=out[..., 3:4],
            means2d=means2d,
            radii=radii.int(),
            width=cameras.width,
            height=cameras.height,
        )
