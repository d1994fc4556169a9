"""The prior doctor's methods and default settings, in a module without torch (the CLI's parser reads them)."""

from __future__ import annotations

# The guidances the doctor measures (those whose gains have a preview along their own path).
METHODS = ("ism", "sds", "sdi")
DEFAULT_TIMESTEPS = (100, 300, 450)
DEFAULT_SEEDS = 3
DEFAULT_VIEWS = 4
# RMS of a perturbation per view in x₀ units: small against the data's spread (pixels in [-1, 1], SD latents of
# std ~1), large against float rounding.
DEFAULT_AMPLITUDE = 0.1
# The preset a user trains with on each kind of model (priors.model_ref.ModelKind), whose guidance settings the doctor
# measures by default; any other kind (Stable Diffusion) trains with the paper's.
PRESET_BY_KIND = {"multiview": "demo", "learned": "learned_demo"}
FALLBACK_PRESET = "paper"
# The app's "Check this model" panel: at most this many seeds and timesteps per check (each costs guidance calls).
MAX_SEEDS = 8
MAX_TIMESTEPS = 8


def preset_for_kind(kind: str) -> str:
    """The default preset of a model kind (:data:`PRESET_BY_KIND`, else :data:`FALLBACK_PRESET`)."""
    return PRESET_BY_KIND.get(kind, FALLBACK_PRESET)
