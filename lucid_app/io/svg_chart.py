"""Line charts as small SVG documents, without a plotting library (training loss, the prior doctor, benchmarks).

One function, :func:`line_chart_svg`: polylines of (x, y) series in a plot box with a linear x axis and a linear y
axis (plot log-scaled data by passing log values and a ``y_format`` that labels them), tick labels at the values
the caller names, dashed horizontal reference lines (r = 0 for the doctor) and a legend when a series has a label.
Coordinates are rounded to 0.1 px; the text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH_PX = 640
HEIGHT_PX = 240
MARGIN_PX = 48
LEGEND_LINE_PX = 16
# Width the legend column takes per character of its longest label (12 px sans-serif), plus its line and gaps.
LEGEND_CHAR_PX = 7
LEGEND_PAD_PX = 28
# A qualitative palette: series without a colour take these in turn.
PALETTE = ("#c0392b", "#2471a3", "#229954", "#7d3c98", "#d68910", "#566573")


@dataclass(frozen=True)
class Series:
    """One curve: ``points`` [(x, y), ...] in data units (non-finite y are skipped), drawn in ``color`` ("" = the
    palette's next), dashed or solid, with round markers when ``markers``; ``label`` "" = not in the legend."""

    points: Sequence[tuple[float, float]]
    label: str = ""
    color: str = ""
    dashed: bool = False
    markers: bool = False


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _span(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        return lo - 0.5, hi + 0.5
    return lo, hi


def line_chart_svg(
    series: Sequence[Series],
    title: str,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    y_ticks: Sequence[tuple[float, str]] | None = None,
    reference_y: Sequence[float] = (),
    x_label: str = "",
    y_format: Callable[[float], str] = _fmt,
    size_px: tuple[int, int] = (WIDTH_PX, HEIGHT_PX),
) -> str:
    """An SVG document of ``series``.

    Args:
        series: the curves, drawn in order.
        title: centred above the plot box.
        x_range, y_range: the data range of the box (None: the finite points' min and max, widened by ±0.5 when
            they are equal; y also takes in ``reference_y``).
        x_ticks, y_ticks: (value, label) pairs written at the box's edge (None: its two ends, labelled with
            ``y_format`` for y and the value for x).
        reference_y: y values drawn as thin dashed grey lines across the box.
        x_label: written under the x axis, centred.
        y_format: label of a y value (default three significant digits).
        size_px: (width, height) of the document.

    Raises:
        ValueError: no finite point in any series.
    """
    width, height = size_px
    finite = [[(float(x), float(y)) for x, y in s.points if math.isfinite(x) and math.isfinite(y)] for s in series]
    every = [p for pts in finite for p in pts]
    if not every:
        raise ValueError("no finite point to plot")
    x_lo, x_hi = x_range or _span([x for x, _ in every])
    y_lo, y_hi = y_range or _span([y for _, y in every] + list(reference_y))
    legend = [(s, PALETTE[k % len(PALETTE)]) for k, s in enumerate(series) if s.label]
    legend_px = LEGEND_PAD_PX + LEGEND_CHAR_PX * max(len(s.label) for s, _ in legend) if legend else 0
    left, right, top, bottom = MARGIN_PX, width - MARGIN_PX - legend_px, MARGIN_PX, height - MARGIN_PX

    def px(x: float) -> float:
        return left + (right - left) * (x - x_lo) / (x_hi - x_lo)

    def py(y: float) -> float:
        return top + (bottom - top) * (y_hi - y) / (y_hi - y_lo)

    parts = [f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<path d="M{left},{top} V{bottom} H{right}" fill="none" stroke="black"/>']
    for value in reference_y:
        parts.append(f'<path d="M{left},{py(value):.1f} H{right}" fill="none" stroke="#999" stroke-dasharray="4 3"/>')
    for k, (spec, points) in enumerate(zip(series, finite)):
        if not points:
            continue
        color = spec.color or PALETTE[k % len(PALETTE)]
        dash = ' stroke-dasharray="6 3"' if spec.dashed else ""
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"{dash}/>')
        if spec.markers:
            parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}"/>' for x, y in points]
    labels = [((left + right) / 2, top - 16, "middle", title)]
    for value, text in x_ticks if x_ticks is not None else [(x_lo, _fmt(x_lo)), (x_hi, _fmt(x_hi))]:
        labels.append((px(value), bottom + 20, "middle", text))
    for value, text in y_ticks if y_ticks is not None else [(y_hi, y_format(y_hi)), (y_lo, y_format(y_lo))]:
        labels.append((left - 6, py(value) + 4, "end", text))
    if x_label:
        labels.append(((left + right) / 2, height - 6, "middle", x_label))
    for row, (spec, fallback) in enumerate(legend):
        y = top + 4 + row * LEGEND_LINE_PX
        dash = ' stroke-dasharray="6 3"' if spec.dashed else ""
        parts.append(f'<path d="M{right + 8},{y} h14" stroke="{spec.color or fallback}" stroke-width="2"{dash}/>')
        labels.append((right + 26, y + 4, "start", spec.label))
    parts += [f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'
              for x, y, anchor, text in labels]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            f'font-size="12">{"".join(parts)}</svg>\n')


def stack_svg(documents: Sequence[str], size_px: tuple[int, int] = (WIDTH_PX, HEIGHT_PX)) -> str:
    """Documents of :func:`line_chart_svg` (each of ``size_px``) one above the other in one SVG document."""
    width, height = size_px
    inner = "".join(doc.strip().replace("<svg ", f'<svg y="{k * height}" ', 1) for k, doc in enumerate(documents))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height * len(documents)}">'
            f"{inner}</svg>\n")
