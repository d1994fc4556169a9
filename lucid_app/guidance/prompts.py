"""View-dependent prompts: "<prompt>, front/side/back view", interpolated by azimuth (DESIGN §4).

Azimuth follows ``cameras.py``: 0° = front, ±90° = side, ±180° = back. Between two neighbouring key views the
conditioning is mixed linearly (on the text embeddings for Stable Diffusion, on the image-weight vectors for the
multi-view prior), exactly as the reference code does:
- |az| ≤ 90°: r = 1 − |az|/90, conditioning = r·front + (1−r)·side;
- |az| > 90°: r = 1 − (|az| − 90)/90, conditioning = r·side + (1−r)·back.
Perp-Neg (Armandpour et al. 2023) uses the same r to weight the view prompts used as negatives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from lucid_app.config import PromptConfig
from lucid_app.priors.base import DiffusionPrior, PriorError

logger = logging.getLogger(__name__)

# Order of the key views in every [..., 3] weight tensor and in PromptEmbeddings.views.
VIEW_NAMES = ("front", "side", "back")


def wrap_azimuth_deg(azimuth_deg: torch.Tensor) -> torch.Tensor:
    """Azimuths wrapped to [-180, 180)."""
    return torch.remainder(azimuth_deg + 180.0, 360.0) - 180.0


def _half_and_ratio(azimuth_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(back_half [C] bool, r [C]) of the module docstring: r = 1 at the half's first key view."""
    az = wrap_azimuth_deg(azimuth_deg.to(torch.float32)).abs()
    back = az > 90.0
    r = torch.where(back, 1.0 - (az - 90.0) / 90.0, 1.0 - az / 90.0)
    return back, r


def view_weights(azimuth_deg: torch.Tensor) -> torch.Tensor:
    """Linear interpolation weights of the (front, side, back) prompts for each camera.

    Args:
        azimuth_deg: [C] camera azimuths in degrees (any range; wrapped).

    Returns:
        [C, 3] non-negative weights summing to 1: 0° → (1, 0, 0); ±45° → (½, ½, 0); ±90° → (0, 1, 0);
        ±135° → (0, ½, ½); 180° → (0, 0, 1).
    """
    back, r = _half_and_ratio(azimuth_deg)
    zero = torch.zeros_like(r)
    front_w = torch.where(back, zero, r)
    side_w = torch.where(back, r, 1.0 - r)
    back_w = torch.where(back, 1.0 - r, zero)
    return torch.stack([front_w, side_w, back_w], dim=-1)


def perp_neg_weights(
    azimuth_deg: torch.Tensor,
    negative_w: float = -2.0,
    front_decay: float = 2.0,
    side_decay: float = 10.0,
) -> torch.Tensor:
    """Perp-Neg weights of the front and side view prompts used as negatives, per camera.

    The reference rule (stable-dreamfusion / LucidDreamer, Perp-Neg defaults negative_w = −2, front decay 2,
    side decay 10), with r from the module docstring:
    - front half: front weight 0 if r > 0.8 else e^(−r·front_decay)·negative_w;
      side weight 0 if r < 0.2 else e^(−(1−r)·side_decay)·negative_w;
    - back half: side weight 0 if r > 0.8 else e^(−r·side_decay)·negative_w/2; front weight negative_w.
    The back view is never used as a negative.

    Args:
        azimuth_deg: [C] camera azimuths in degrees.

    Returns:
        [C, 2] weights of the (front, side) negative directions.
    """
    back, r = _half_and_ratio(azimuth_deg)
    zero = torch.zeros_like(r)
    front_front = torch.where(r > 0.8, zero, torch.exp(-r * front_decay) * negative_w)
    front_side = torch.where(r < 0.2, zero, torch.exp(-(1.0 - r) * side_decay) * negative_w)
    back_side = torch.where(r > 0.8, zero, torch.exp(-r * side_decay) * negative_w / 2.0)
    back_front = torch.full_like(r, negative_w)
    front_w = torch.where(back, back_front, front_front)
    side_w = torch.where(back, back_side, front_side)
    return torch.stack([front_w, side_w], dim=-1)


def mix_conditioning(weights: torch.Tensor, conds: torch.Tensor) -> torch.Tensor:
    """Linear mix of conditionings: [C, V] weights × [V, ...] conditionings → [C, ...]."""
    flat = conds.reshape(conds.shape[0], -1)
    return (weights.to(flat.dtype) @ flat).reshape(weights.shape[0], *conds.shape[1:])


def view_prompt_texts(config: PromptConfig) -> list[str]:
    """["<text><front_suffix>", "<text><side_suffix>", "<text><back_suffix>"] (suffixes from ``config``)."""
    return [config.text + config.front_suffix, config.text + config.side_suffix, config.text + config.back_suffix]


@dataclass(frozen=True)
class PromptEmbeddings:
    """The encoded conditionings of one generation, built once by :func:`encode_prompt_set`.

    Attributes:
        base: [1, ...] the plain prompt.
        views: [3, ...] the (front, side, back) view prompts.
        negative: [1, ...] the negative prompt (CFG's unconditional branch, supplementary eq. 1).
        inverse: [1, ...] the prompt of the DDIM inversion ("inverse text"; empty = unconditional).
        view_dependent: whether :meth:`positive` interpolates the view prompts or repeats ``base``.
    """

    base: torch.Tensor
    views: torch.Tensor
    negative: torch.Tensor
    inverse: torch.Tensor
    view_dependent: bool = True

    def positive(self, azimuth_deg: torch.Tensor) -> torch.Tensor:
        """[C] azimuths → [C, ...] positive conditioning (view-interpolated when ``view_dependent``)."""
        if not self.view_dependent:
            return self.base.expand(azimuth_deg.shape[0], *self.base.shape[1:])
        return mix_conditioning(view_weights(azimuth_deg).to(self.views.device), self.views)


def encode_or_unconditional(prior: DiffusionPrior, text: str, role: str, unconditional: torch.Tensor) -> torch.Tensor:
    """Encode a negative/inverse prompt; one the prior cannot interpret means "unconditional" (DESIGN §5)."""
    if text == "":
        return unconditional
    try:
        return prior.encode_prompts([text])
    except PriorError as err:
        logger.warning("%s prompt %r not understood by the prior (%s); using the unconditional prompt", role, text, err)
        return unconditional


def encode_prompt_set(prior: DiffusionPrior, config: PromptConfig) -> PromptEmbeddings:
    """Encode the plain, view, unconditional, negative and inverse prompts of ``config``.

    All positive prompts and the empty prompt go through one ``prior.encode_prompts`` call; a positive prompt the
    prior cannot interpret raises its :class:`PriorError`. The negative and inverse prompts are encoded apart so
    that one the prior cannot interpret (the multi-view prior when it matches no caption) falls back to the
    unconditional prompt with a warning, as DESIGN §5 specifies.
    """
    texts = [config.text, *view_prompt_texts(config), ""]
    encoded = prior.encode_prompts(texts)
    unconditional = encoded[4:5]
    return PromptEmbeddings(
        base=encoded[0:1],
        views=encoded[1:4],
        negative=encode_or_unconditional(prior, config.negative, "negative", unconditional),
        inverse=encode_or_unconditional(prior, config.inverse_text, "inverse", unconditional),
        view_dependent=config.view_dependent,
    )

