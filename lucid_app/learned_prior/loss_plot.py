"""The training loss curve as a small SVG (no plotting library): step on x, ε-MSE on a log₁₀ y axis."""

from __future__ import annotations

import math
from collections.abc import Sequence

WIDTH_PX = 640
HEIGHT_PX = 240
MARGIN_PX = 48


def loss_curve_svg(records: Sequence[tuple[int, float]], title: str = "train-prior loss (EMA of ε-MSE)") -> str:
    """An SVG document plotting ``records`` [(step, loss), ...] (positive losses; others are skipped).

    x is linear in the step from 0 to the last step, y is log₁₀(loss) between the smallest and largest loss (one
    decade when they are equal), so the curve's shape late in training stays visible.

    Raises:
        ValueError: no record with a positive, finite loss.
    """
    points = [(int(s), float(v)) for s, v in records if math.isfinite(v) and v > 0]
    if not points:
        raise ValueError("no positive, finite loss to plot")
    last_step = max(points[-1][0], 1)
    logs = [math.log10(v) for _, v in points]
    lo, hi = math.floor(min(logs) * 10) / 10, math.ceil(max(logs) * 10) / 10
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    plot_w, plot_h = WIDTH_PX - 2 * MARGIN_PX, HEIGHT_PX - 2 * MARGIN_PX

    def x_of(step: int) -> float:
        return MARGIN_PX + plot_w * step / last_step

    def y_of(log_loss: float) -> float:
        return MARGIN_PX + plot_h * (hi - log_loss) / (hi - lo)

    polyline = " ".join(f"{x_of(s):.1f},{y_of(v):.1f}" for (s, _), v in zip(points, logs))
    bottom, right = HEIGHT_PX - MARGIN_PX, WIDTH_PX - MARGIN_PX
    labels = [
        (MARGIN_PX, bottom + 20, "start", "0"),
        (right, bottom + 20, "end", f"step {last_step}"),
        (MARGIN_PX - 6, MARGIN_PX + 4, "end", f"{10 ** hi:.3g}"),
        (MARGIN_PX - 6, bottom + 4, "end", f"{10 ** lo:.3g}"),
        (WIDTH_PX / 2, MARGIN_PX - 16, "middle", title),
    ]
    text = "".join(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{label}</text>'
                   for x, y, anchor, label in labels)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{HEIGHT_PX}" '
        f'font-family="sans-serif" font-size="12">'
        f'<rect width="{WIDTH_PX}" height="{HEIGHT_PX}" fill="white"/>'
        f'<path d="M{MARGIN_PX},{MARGIN_PX} V{bottom} H{right}" fill="none" stroke="black"/>'
        f'<polyline points="{polyline}" fill="none" stroke="#c0392b" stroke-width="1.5"/>{text}</svg>\n'
    )
