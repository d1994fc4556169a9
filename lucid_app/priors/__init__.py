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
    """Load the prior ``model`` names (parsed once as a :class:`~lucid_app.priors.model_ref.ModelRef`):
    ``multiview:PATH`` → the analytic multi-view prior; a folder holding ``lucid_prior.json`` (written by
    ``train-prior``) → the learned prior; anything else → Stable Diffusion (hub id, folder or single file).

    Each loader is imported only when needed, so the multi-view prior works without the others. diffusers' and
    transformers' messages go through the ``logging`` tree from here on (:mod:`lucid_app.priors.library_logs`).
    ``allow_pickle`` lets it read pickle-format weights (``.ckpt``/``.bin``/``.pt``); only the CLI's explicit
    ``--allow-pickle`` sets it (:mod:`lucid_app.config.trust`).

    Raises:
        PriorError: the model cannot be loaded (one line saying why).
    """
    from lucid_app.config import ConfigError
    from lucid_app.priors.library_logs import route_library_logs
    from lucid_app.priors.model_ref import parse_model_ref

    try:
        ref = parse_model_ref(model)
    except ConfigError as err:
        raise PriorError(str(err)) from None
    if ref.kind == "multiview":
        from lucid_app.priors.multiview import load_multiview_prior

        route_library_logs("diffusers")  # its scheduler; it needs no transformers
        return load_multiview_prior(ref.location, config, device)
    route_library_logs("diffusers", "transformers")
    if ref.kind == "learned":
        from lucid_app.priors.learned import load_learned_prior

        return load_learned_prior(ref.location, config, device)
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    return load_stable_diffusion(ref.location, config, device, allow_pickle=allow_pickle)
