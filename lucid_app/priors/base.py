"""The diffusion-prior protocol shared by Stable Diffusion and the analytic multi-view prior.

Guidance (ISM, SDS) only talks to this protocol. Conditioning is a tensor per prompt, opaque to guidance
except that it can be mixed linearly (view-prompt interpolation, Perp-Neg): for Stable Diffusion it is the text
encoder's hidden states [77, D]; for the multi-view prior it is a weight vector over the dataset images [K].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from lucid_app.render.cameras import CameraBatch


class PriorError(RuntimeError):
    """A prior could not be loaded or used; the message says what was tried and what to do."""


class DiffusionPrior(Protocol):
    """A noise-prediction diffusion model over x0 (SD latents or pixels), with DDPM timesteps 0..T-1.

    Attributes:
        name: the model string it was loaded from.
        device: where its tensors live.
        alphas_cumprod: [T] float32 ᾱ_t of the training schedule (on ``device``).
        num_train_timesteps: T.
    """

    name: str
    device: torch.device
    alphas_cumprod: torch.Tensor
    num_train_timesteps: int

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """Rendered images [C, H, W, 3] in [0, 1] -> x0 [C, ...] in the prior's space, differentiable."""
        ...

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 [C, ...] -> images [C, h, w, 3] in [0, 1] for previews (no gradient)."""
        ...

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> conditioning [P, ...]; the empty string is the unconditional prompt."""
        ...

    def predict_noise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        control: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε̂(x_t, t, cond) for a batch with per-sample conditioning; no gradient flows to the prior's weights.

        Args:
            x_t: [B, ...] noisy samples in the prior's space.
            t: [B] integer timesteps in [0, T).
            cond: [B, ...] conditioning rows (from ``encode_prompts``, possibly mixed).
            control: optional prior-specific conditioning from the trainer's ``control_fn``: [B, H, W, 3] control
                images in [0, 1] for ControlNet priors, [B, 3] camera directions for a camera-conditioned prior
                (:class:`CameraConditioned`).

        Returns:
            [B, ...] predicted noise, same shape and dtype as ``x_t``.
        """
        ...


@runtime_checkable
class CameraConditioned(Protocol):
    """A prior that may condition on the render's camera (the multi-view prior with ``multiview_camera_sigma_deg``).

    Attributes:
        conditions_on_camera: whether it does (then the trainer passes ``camera_control(cameras)`` as ``control``).
    """

    conditions_on_camera: bool

    def camera_control(self, cameras: CameraBatch) -> torch.Tensor:
        """Cameras [C] → the ``control`` tensor its ``predict_noise`` reads."""
        ...


def camera_control_fn(prior: object) -> Callable[[CameraBatch], torch.Tensor] | None:
    """The trainer's ``control_fn`` for a camera-conditioned prior (None for any other prior, or when it is off)."""
    if isinstance(prior, CameraConditioned) and prior.conditions_on_camera:
        return prior.camera_control
    return None
