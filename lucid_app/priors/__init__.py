"""Diffusion priors: Stable Diffusion (diffusers) and the analytic multi-view prior.

:func:`load_prior` is the one dispatcher from a model string to a loaded :class:`DiffusionPrior`.
"""

from __future__ import annotations

import torch

from lucid_app.config import ModelConfig
from lucid_app.priors.base import DiffusionPrior, PriorError

__all__ = ["DiffusionPrior", "PriorError", "load_prior"]


def load_prior(
    model: str, config: ModelConfig, device: torch.device | str = "cpu", allow_pickle: bool = False
) -> DiffusionPrior:
    """``multiview:PATH`` → the analytic multi-view prior; anything else → Stable Diffusion (hub id or folder).

    The Stable Diffusion loader is imported only when needed, so the multi-view prior works without it.
    ``allow_pickle`` lets it read pickle-format weights (``.ckpt``/``.bin``/``.pt``); only the CLI's explicit
    ``--allow-pickle`` sets it (:mod:`lucid_app.trust`).
    """
    if model.startswith("multiview:"):
        from lucid_app.priors.multiview import MODEL_PREFIX, load_multiview_prior

        return load_multiview_prior(model[len(MODEL_PREFIX) :], config, device)
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    return load_stable_diffusion(model, config, device, allow_pickle=allow_pickle)
