"""Benchmarks with JSON output: quality against the oracle ceiling on a multi-view dataset, one step at real size,
the 2D distillation check, image metrics, and the offline demo dataset's objects."""
