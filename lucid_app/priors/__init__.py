"""Diffusion priors: Stable Diffusion (diffusers), the analytic multi-view prior and the learned miniature prior.

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
    """``multiview:PATH`` → the analytic multi-view prior; a folder holding ``lucid_prior.json`` (written by
    ``train-prior``) → the learned prior; anything else → Stable Diffusion (hub id or folder).

    Each loader is imported only when needed, so the multi-view prior works without the others.
    ``allow_pickle`` lets it read pickle-format weights (``.ckpt``/``.bin``/``.pt``); only the CLI's explicit
    ``--allow-pickle`` sets it (:mod:`lucid_app.config.trust`).
    """
    if model.startswith("multiview:"):
        from lucid_app.priors.multiview import MODEL_PREFIX, load_multiview_prior

        return load_multiview_prior(model[len(MODEL_PREFIX) :], config, device)
    from lucid_app.priors.learned_folder import is_prior_folder

    if is_prior_folder(model):
        from lucid_app.priors.learned import load_learned_prior

        return load_learned_prior(model, config, device)
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    return load_stable_diffusion(model, config, device, allow_pickle=allow_pickle)
