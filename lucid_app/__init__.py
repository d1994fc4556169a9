"""lucid-app: text-to-3D Gaussian Splatting with Interval Score Matching (LucidDreamer)."""

__version__ = "0.1.0"
