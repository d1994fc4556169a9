"""The prior doctor's report: the JSON summary, the table on stderr and the SVG plot of r and the gains against t.

JSON (the last stdout line of ``python -m lucid_app doctor``, and ``doctor.json``), timesteps as string keys:
    {"model", "prompt", "t": [...], "methods": [...],
     "restoring": {method: {t: r}},                        r averaged over seeds and perturbations
     "gain": {"ism": {"s": {t: g}, "t": {t: g}}, "sds": {"t": {...}}, "sdi": {"t": {...}}},
     "verdict": {method: "restores" | "drifts"},
     "pull": {method: {t: p}}, "offset": {method: {t: p / r, null where r <= 0}}   where descent settles (measure, 5)
     "by_perturbation": {kind: {"restoring": {...}, "gain": {...}, "restoring_seeds": {method: {t: [r per seed]}}}},
     "references": {"source", "caption", "indices", "azimuth_deg"}, "settings": {...},
     "nonfinite_evaluations", "seconds"}
"""

from __future__ import annotations

import math
from typing import Any

from lucid_app.io.svg_chart import Series, line_chart_svg, stack_svg
from lucid_app.lab.doctor.measure import METHOD_PREVIEWS, DoctorMeasurement

DECIMALS = 6
# Colours per method: r solid, the gains dashed in the same colour.
METHOD_COLORS = {"ism": "#c0392b", "sds": "#2471a3", "sdi": "#229954"}


def _round(value: float) -> float:
    return round(float(value), DECIMALS)


def _by_t(measurement: DoctorMeasurement, value: Any) -> dict[str, float]:
    return {str(t): _round(value(t)) for t in measurement.settings.timesteps}


def restoring_table(measurement: DoctorMeasurement, kind: str | None = None) -> dict[str, dict[str, float]]:
    """{method: {t: r}}, r averaged over seeds (and perturbations unless ``kind`` names one)."""
    return {m: _by_t(measurement, lambda t, m=m: measurement.mean_restoring(m, t, kind))
            for m in measurement.settings.methods}


def gain_table(measurement: DoctorMeasurement, kind: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {"s" / "t": {t: gain}}} (module docstring)."""
    return {m: {w: _by_t(measurement, lambda t, m=m, w=w: measurement.mean_gain(m, w, t, kind))
                for w in METHOD_PREVIEWS[m]} for m in measurement.settings.methods}


def offset_table(measurement: DoctorMeasurement) -> dict[str, dict[str, float | None]]:
    """{method: {t: p / r}}, None where r ≤ 0 (JSON has no ∞)."""
    return {m: {str(t): (_round(value) if math.isfinite(value := measurement.offset(m, t)) else None)
                for t in measurement.settings.timesteps} for m in measurement.settings.methods}


def summary(measurement: DoctorMeasurement, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of the module docstring; ``extra`` (model, prompt, references, settings, seconds, ...) is
    merged in first, so the measurement's own keys cannot be overwritten by it."""
    settings = measurement.settings
    by_kind = {
        kind: {
            "restoring": restoring_table(measurement, kind),
            "gain": gain_table(measurement, kind),
            "restoring_seeds": {m: {str(t): [_round(r) for r in measurement.restoring[kind][m][t]]
                                    for t in settings.timesteps} for m in settings.methods},
        }
        for kind in settings.perturbations
    }
    return {
        **extra,
        "t": list(settings.timesteps),
        "methods": list(settings.methods),
        "restoring": restoring_table(measurement),
        "gain": gain_table(measurement),
        "verdict": {m: measurement.verdict(m) for m in settings.methods},
        "pull": {m: _by_t(measurement, lambda t, m=m: measurement.pull[m][t]) for m in settings.methods},
        "offset": offset_table(measurement),
        "by_perturbation": by_kind,
        "nonfinite_evaluations": measurement.nonfinite,
    }


def table_text(result: dict[str, Any]) -> str:
    """The table printed on stderr: one row per method and t (r overall and per perturbation, the gains, the pull
    and the offset of the fixed point), then one verdict line per method."""
    kinds = list(result["by_perturbation"])
    head = ["method", "t", "r", *(f"r_{k}" for k in kinds), "gain_s", "gain_t", "pull", "offset"]
    rows = [head]
    for method in result["methods"]:
        for t in map(str, result["t"]):
            gains = result["gain"][method]
            rows.append([method, t, f"{result['restoring'][method][t]:+.3f}",
                         *(f"{result['by_perturbation'][k]['restoring'][method][t]:+.3f}" for k in kinds),
                         f"{gains['s'][t]:.3f}" if "s" in gains else "-", f"{gains['t'][t]:.3f}",
                         *_pull_cells(result, method, t)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines += [f"verdict {m}: {result['verdict'][m]}" for m in result["methods"]]
    legend = ("(restores: r > 0 at every t; drifts: r <= 0 at some t. pull: how hard the method moves a true "
              "image, per λ; offset = pull / r: how far from it descent settles)")
    return "\n".join([*lines, legend])


def _pull_cells(result: dict[str, Any], method: str, t: str) -> list[str]:
    """The pull and offset cells of a row ("-" for a summary saved before the doctor measured them)."""
    if "pull" not in result:
        return ["-", "-"]
    offset = result["offset"][method][t]
    return [f"{result['pull'][method][t]:.3f}", "inf" if offset is None else f"{offset:.3f}"]


def doctor_svg(result: dict[str, Any]) -> str:
    """Two stacked charts against t: the restoring coefficient r per method (dashed line at 0), and the gains
    (solid gain_t, dashed gain_s) with a dashed line at 1."""
    ts = [int(t) for t in result["t"]]
    ticks = [(t, str(t)) for t in ts]
    x_range = (min(ts) - 10, max(ts) + 10) if len(ts) > 1 else (ts[0] - 50, ts[0] + 50)

    def points(table: dict[str, float]) -> list[tuple[float, float]]:
        return [(int(t), value) for t, value in table.items()]

    r_series = [Series(points(result["restoring"][m]), f"r {m}", METHOD_COLORS.get(m, ""), markers=True)
                for m in result["methods"]]
    gain_series = [Series(points(table), f"gain_{which} {m}", METHOD_COLORS.get(m, ""), dashed=which == "s",
                          markers=True)
                   for m in result["methods"] for which, table in sorted(result["gain"][m].items(), reverse=True)]
    title = f"doctor: {result.get('model', '')} / {result.get('prompt', '')}"
    charts = [
        line_chart_svg(r_series, f"{title} — restoring coefficient r", x_range=x_range, x_ticks=ticks,
                       reference_y=[0.0], x_label="t"),
        line_chart_svg(gain_series, "x̂₀ gain along each method's path", x_range=x_range, x_ticks=ticks,
                       reference_y=[1.0], x_label="t"),
    ]
    return stack_svg(charts)
