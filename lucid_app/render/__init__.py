"""Differentiable Gaussian-splatting renderers."""
