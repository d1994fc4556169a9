"""Optional backend (name ``"inria"``): the original 3DGS CUDA rasteriser, ``diff_gaussian_rasterization``.

It is not on PyPI and is imported only when the renderer is built. It draws one view per call and returns no
depth or alpha, so a second pass with precomputed colours ``(z, 1, 0)`` over a black background yields
``sum_i w_i z_i`` and ``sum_i w_i`` exactly. Its means2D gradient is in normalised device units; we feed it
pixel positions scaled by 2 / size so that ``means2d.grad`` is per pixel, as the contract says.
"""

from __future__ import annotations

import torch

from lucid_app.render.base import RenderOutput, Splats
from lucid_app.render.cameras import CameraBatch
from lucid_app.render.projection import NEAR_PLANE, project_gaussians

INSTALL_HINT = (
    "diff_gaussian_rasterization is not on PyPI; build it from source with CUDA: "
    "pip install git+https://github.com/graphdeco-inria/diff-gaussian-rasterization "
    "(or use the 'gsplat' or 'torch' renderer)"
)
FAR_PLANE = 100.0


def _projection_matrix(tan_x: float, tan_y: float, viewmat: torch.Tensor) -> torch.Tensor:
    """3DGS's full projection (row-vector convention, i.e. transposed) for an OpenCV world-to-camera matrix."""
    proj = torch.zeros(4, 4, dtype=viewmat.dtype, device=viewmat.device)
    proj[0, 0], proj[1, 1] = 1.0 / tan_x, 1.0 / tan_y
    proj[2, 2] = FAR_PLANE / (FAR_PLANE - NEAR_PLANE)
    proj[2, 3] = -FAR_PLANE * NEAR_PLANE / (FAR_PLANE - NEAR_PLANE)
    proj[3, 2] = 1.0
    return (proj @ viewmat).T


class InriaRenderer:
    """The INRIA rasteriser, one view at a time (CUDA, float32, centred principal point)."""

    name = "inria"

    def __init__(self, device: torch.device | str = "cuda") -> None:
        try:
            import diff_gaussian_rasterization as dgr
        except ImportError as err:
            raise ImportError(f"the 'inria' renderer needs diff_gaussian_rasterization: {INSTALL_HINT}") from err
        if torch.device(device).type != "cuda":
            raise ValueError(f"the 'inria' renderer needs a CUDA device, got {device}")
        self._dgr = dgr

    def _draw(self, cam: CameraBatch, splats: Splats, bg: torch.Tensor, screen: torch.Tensor, **colour) -> tuple:
        w, h = cam.width, cam.height
        fx, fy, cx, cy = (float(v) for v in (cam.Ks[0, 0, 0], cam.Ks[0, 1, 1], cam.Ks[0, 0, 2], cam.Ks[0, 1, 2]))
        if abs(cx - 0.5 * w) > 1e-3 or abs(cy - 0.5 * h) > 1e-3:
            raise ValueError("the 'inria' renderer needs the principal point at the image centre")
        tan_x, tan_y = 0.5 * w / fx, 0.5 * h / fy
        settings = self._dgr.GaussianRasterizationSettings(
            image_height=h, image_width=w, tanfovx=tan_x, tanfovy=tan_y, bg=bg, scale_modifier=1.0,
            viewmatrix=cam.viewmats[0].T.contiguous(), projmatrix=_projection_matrix(tan_x, tan_y, cam.viewmats[0]),
            sh_degree=splats.sh_degree, campos=cam.centers[0], prefiltered=False, debug=False,
        )
        out = self._dgr.GaussianRasterizer(settings)(
            means3D=splats.means, means2D=screen, opacities=splats.opacities[:, None],
            scales=splats.scales, rotations=splats.quats, **colour,
        )
        return out[0], out[1]  # image [3, H, W], radii [N]; extra outputs of forks are ignored

    def render(self, splats: Splats, cameras: CameraBatch, backgrounds: torch.Tensor) -> RenderOutput:
        """Render ``splats`` from every camera; see :class:`~lucid_app.render.base.Renderer`."""
        cams = cameras.to(splats.means.device, splats.means.dtype)
        with torch.no_grad():
            pixels = project_gaussians(splats, cams.viewmats, cams.Ks, cameras.width, cameras.height).means2d
        means2d = pixels.clone().requires_grad_(splats.means.requires_grad)
        if means2d.requires_grad:
            means2d.retain_grad()
        size = torch.tensor([cameras.width, cameras.height], dtype=pixels.dtype, device=pixels.device)
        rgbs, alphas, depths, radii = [], [], [], []
        for i in range(len(cameras)):
            cam = cams[i]
            screen = torch.nn.functional.pad(means2d[i] * (2.0 / size), (0, 1))  # [N, 3], values unused
            rgb, rad = self._draw(cam, splats, backgrounds[i].to(pixels), screen, shs=splats.sh)
            z = (splats.means @ cam.viewmats[0, :3, :3].T + cam.viewmats[0, :3, 3])[:, 2:]
            extra = torch.cat([z, torch.ones_like(z), torch.zeros_like(z)], dim=-1)
            zd, _ = self._draw(cam, splats, pixels.new_zeros(3), screen, colors_precomp=extra)
            rgbs.append(rgb.permute(1, 2, 0))
            depths.append(zd[0, :, :, None])
            alphas.append(zd[1, :, :, None])
            radii.append(rad)
        return RenderOutput(
            torch.stack(rgbs), torch.stack(alphas), torch.stack(depths), means2d, torch.stack(radii).int(),
            cameras.width, cameras.height,
        )
