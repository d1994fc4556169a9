"""Diffusion priors: Stable Diffusion (diffusers) and the analytic multi-view prior."""
