"""The diffusion-prior protocol shared by Stable Diffusion and the analytic multi-view prior.

Guidance (ISM, SDS) only talks to this protocol. Conditioning is a tensor per prompt, opaque to guidance
except that it can be mixed linearly (view-prompt interpolation, Perp-Neg): for Stable Diffusion it is the text
encoder's hidden states [77, D]; for the multi-view prior it is a weight vector over the dataset images [K].
"""

from __future__ import annotations

from typing import Protocol

import torch


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
            control: optional [B, H, W, 3] control images in [0, 1] (ControlNet priors only).

        Returns:
            [B, ...] predicted noise, same shape and dtype as ``x_t``.
        """
        ...
