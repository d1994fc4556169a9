"""The training loss curve as a small SVG (:mod:`lucid_app.io.svg_chart`): step on x, the loss on a log₁₀ y axis."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lucid_app.io.svg_chart import HEIGHT_PX, MARGIN_PX, Series, line_chart_svg

__all__ = ["HEIGHT_PX", "MARGIN_PX", "loss_curve_svg"]


def loss_curve_svg(records: Sequence[tuple[int, float]], title: str = "train-prior loss (mean per logged step)") -> str:
    """An SVG document plotting ``records`` [(step, loss), ...] (positive losses; others are skipped).

    x is linear in the step from 0 to the last step, y is log₁₀(loss) between the smallest and largest loss rounded
    out to tenths of a decade (one decade when they are equal), so the curve's shape late in training stays visible.

    Raises:
        ValueError: no record with a positive, finite loss.
    """
    points = [(int(s), float(v)) for s, v in records if math.isfinite(v) and v > 0]
    if not points:
        raise ValueError("no positive, finite loss to plot")
    last_step = max(points[-1][0], 1)
    logs = [(step, math.log10(v)) for step, v in points]
    lo, hi = math.floor(min(v for _, v in logs) * 10) / 10, math.ceil(max(v for _, v in logs) * 10) / 10
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return line_chart_svg([Series(logs)], title, x_range=(0, last_step), y_range=(lo, hi),
                          x_ticks=[(0, "0"), (last_step, f"step {last_step}")],
                          y_format=lambda v: f"{10 ** v:.3g}")
