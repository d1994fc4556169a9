"""The clean views x₀ the prior doctor perturbs: a dataset object's held-out test views, or the prior's own samples.

- With a dataset (DESIGN §5 layout): the test views of the object whose caption the prompt selects (the multi-view
  prior's caption matching, :func:`lucid_app.priors.multiview.select_object_index`), ``views`` of them evenly spaced
  through ``transforms_test.json``, read at the render size and encoded with ``prior.encode_images``; azimuths and
  (for a camera-conditioned prior) the control tensor from their cameras.
- Without one: what a user with any checkpoint has, the prior's own DDIM samples of "<prompt><front suffix>"
  (:func:`lucid_app.guidance.sampling.sample_cfg`, CFG at the guidance's scale against the empty prompt), at
  azimuth 0; the x₀ shape is that of ``prior.encode_images`` of a blank render.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lucid_app.config import TrainConfig
from lucid_app.priors.base import DiffusionPrior, camera_control_fn

DEFAULT_VIEWS = 4
SAMPLE_STEPS = 50
SAMPLE_SEED = 0
BLANK_GREY = 0.5


@dataclass(frozen=True)
class References:
    """Clean views: ``x0`` [V, ...] in the prior's space, ``azimuth_deg`` [V], ``control`` (or None), and where
    they came from (``source``: "dataset" or "samples", ``caption`` of the dataset object, ``indices`` of the test
    views used)."""

    x0: torch.Tensor
    azimuth_deg: torch.Tensor
    control: torch.Tensor | None
    source: str
    caption: str | None = None
    indices: tuple[int, ...] = ()


def spread_indices(count: int, views: int) -> list[int]:
    """``views`` indices evenly spaced over [0, count) (all of them when ``views`` ≥ ``count``)."""
    if views >= count:
        return list(range(count))
    return [round(i * count / views) for i in range(views)]


def dataset_references(prior: DiffusionPrior, dataset: str | Path, prompt: str, views: int,
                       size_px: int) -> References:
    """The selected object's test views (module docstring).

    Raises:
        PriorError: not a dataset, or no caption matches the prompt (the message lists the captions).
        ValueError: the prompt selects several objects, or the object has no test views.
    """
    from lucid_app.priors.multiview import read_dataset, select_object_index, with_test_split

    data = read_dataset(Path(dataset).expanduser(), size_px)
    obj = with_test_split(data.objects[select_object_index(data, prompt)])
    images, all_cameras = obj.test_images, obj.test_cameras  # both present: with_test_split checked
    indices = spread_indices(images.shape[0], views)
    chosen = torch.tensor(indices)
    cameras = all_cameras[chosen]
    control_fn = camera_control_fn(prior)
    with torch.no_grad():
        x0 = prior.encode_images(images[chosen].to(prior.device)).detach()
    control = None if control_fn is None else control_fn(cameras.to(prior.device))
    return References(x0, cameras.azimuth_deg.float().cpu(), control, "dataset", obj.caption, tuple(indices))


def sample_references(prior: DiffusionPrior, config: TrainConfig, views: int) -> References:
    """The prior's own DDIM samples of the front-view prompt at azimuth 0 (module docstring)."""
    from lucid_app.guidance.sampling import sample_cfg

    size = (config.render.height, config.render.width)
    with torch.no_grad():
        blank = torch.full((1, *size, 3), BLANK_GREY, device=prior.device)
        shape = tuple(prior.encode_images(blank).shape[1:])
    text = config.prompt.text + config.prompt.front_suffix
    x0 = sample_cfg(prior, [text] * views, shape, torch.Generator().manual_seed(SAMPLE_SEED), steps=SAMPLE_STEPS,
                    scale=config.guidance.guidance_scale)
    azimuth = torch.zeros(views)
    control_fn = camera_control_fn(prior)
    control = None
    if control_fn is not None:
        from lucid_app.render.cameras import orbit_cameras

        cams = config.cameras
        cameras = orbit_cameras(azimuth, torch.full((views,), cams.default_polar_deg),
                                torch.full((views,), cams.default_radius), torch.full((views,), cams.default_fovy_rad),
                                size[1], size[0])
        control = control_fn(cameras.to(prior.device))
    return References(x0.detach(), azimuth, control, "samples")
