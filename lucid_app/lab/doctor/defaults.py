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
