"""Optional text-to-point-cloud initialisation with OpenAI's Point-E (the paper's default init).

Point-E is not on PyPI. Install it from its repository (``pip install git+https://github.com/openai/point-e``,
which pulls torchvision-free deps but downloads its model weights, ~500 MB, on first use). When it is missing,
the init falls back to ``init.shape_fallback`` with a notice (``init_shapes.init_gaussians``).
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install git+https://github.com/openai/point-e (downloads its weights on first use)"


def pointe_available() -> bool:
    """Whether the ``point_e`` package can be imported (nothing is imported here)."""
    return importlib.util.find_spec("point_e") is not None


def pointe_points(
    prompt: str, count: int, radius: float, generator: torch.Generator, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A coloured point cloud for ``prompt`` from Point-E (base40M-textvec + upsampler, 4096 points), scaled to
    fit a ball of ``radius`` and resampled with small jitter to ``count`` points.

    Point-E's frame is z-up like ours; its objects face -y, so the cloud is turned 180° about z to face +y (our
    front). Returns (points [count, 3], colours [count, 3] in [0, 1]) on the CPU.
    """
    from point_e.diffusion.configs import DIFFUSION_CONFIGS, diffusion_from_config
    from point_e.diffusion.sampler import PointCloudSampler
    from point_e.models.configs import MODEL_CONFIGS, model_from_config
    from point_e.models.download import load_checkpoint

    torch_device = torch.device(device)
    models, diffusions = [], []
    for name in ("base40M-textvec", "upsample"):
        model = model_from_config(MODEL_CONFIGS[name], torch_device)
        model.eval()
        model.load_state_dict(load_checkpoint(name, torch_device))
        models.append(model)
        diffusions.append(diffusion_from_config(DIFFUSION_CONFIGS[name]))
    sampler = PointCloudSampler(
        device=torch_device, models=models, diffusions=diffusions, num_points=[1024, 4096 - 1024],
        aux_channels=["R", "G", "B"], guidance_scale=[3.0, 0.0], model_kwargs_key_filter=("texts", ""),
    )
    # Point-E samples with the global RNG; seed it from our generator so the init is reproducible.
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item()))
    samples = None
    for samples in sampler.sample_batch_progressive(batch_size=1, model_kwargs={"texts": [prompt]}):
        pass
    cloud = sampler.output_to_point_clouds(samples)[0]
    points = torch.as_tensor(np.asarray(cloud.coords), dtype=torch.float32) * torch.tensor([-1.0, -1.0, 1.0])
    colors = torch.as_tensor(np.stack([cloud.channels[c] for c in "RGB"], axis=-1), dtype=torch.float32)
    return resample_cloud(points, colors, count, radius, generator)


def resample_cloud(
    points: torch.Tensor, colors: torch.Tensor, count: int, radius: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre ``points`` [P, 3], scale them into a ball of ``radius`` and draw ``count`` of them with jitter of
    1 % of the radius (colours [P, 3] follow their points)."""
    centred = points - points.mean(dim=0)
    centred = centred * (radius / centred.norm(dim=-1).max().clamp_min(1e-8))
    index = torch.randint(0, points.shape[0], (count,), generator=generator)
    jitter = 0.01 * radius * torch.randn(count, 3, generator=generator)
    return centred[index] + jitter, colors[index].clamp(0.0, 1.0)
