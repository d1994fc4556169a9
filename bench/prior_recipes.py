"""Table and plot of the doctor's r_ISM against training time, one curve per ``train-prior`` recipe.

Input: one folder per recipe, as the recipe runs leave them (``RECIPES_DIR/<recipe>/``): ``segments.jsonl`` (one
line per training segment: ``segment``, ``steps``, wall seconds, load) and ``seg_<k>/doctor/doctor.json`` (the
doctor on the folder after segment k). Training time is given in *idle minutes*: steps × the idle pace
(``--s-per-step``, seconds per step of batch 32 on two idle cores), so segments trained on a loaded machine are
placed where an idle machine would have reached them; the wall seconds stay in the raw files.

Output: a Markdown table on stdout (recipe, steps, idle minutes, r_ISM at each t, r_SDS, ISM's gains), then one
JSON object (last line: the same figures per recipe and segment) and, with
``--svg``, a chart of r_ISM at t = 300 (solid) and 450 (dashed) against idle minutes, with the gate r = 0.

    python bench/prior_recipes.py runs/recipes --s-per-step 0.8444 --svg docs/prior_recipes.svg
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from lucid_app.io.svg_chart import PALETTE, Series, line_chart_svg

GATE_T = ("300", "450")
MINUTES_TICK = 5
R_TICK = 0.2


def read_recipe(folder: Path) -> list[dict[str, Any]]:
    """[{steps, doctor}] per segment with a doctor report, in segment order."""
    steps = {}
    for line in (folder / "segments.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "steps" in row:
            steps[row["segment"]] = row["steps"]
    rows = []
    for segment, count in sorted(steps.items()):
        report = folder / f"seg_{segment}" / "doctor" / "doctor.json"
        if report.is_file():
            rows.append({"steps": count, "doctor": json.loads(report.read_text())})
    return rows


def table(recipes: dict[str, list[dict[str, Any]]], s_per_step: float) -> str:
    """Markdown: one row per recipe and segment."""
    ts = next(iter(r["doctor"]["t"] for rows in recipes.values() for r in rows), [])
    head = ["recipe", "steps", "idle min", *(f"r_ISM t={t}" for t in ts), *(f"r_SDS t={t}" for t in ts),
            "ISM gain_s / gain_t at 300"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in recipes.items():
        for row in rows:
            doc = row["doctor"]
            ism = [f"{doc['restoring']['ism'][str(t)]:+.3f}" for t in ts]
            sds = ([f"{doc['restoring']['sds'][str(t)]:+.3f}" for t in ts] if "sds" in doc["restoring"]
                   else ["-"] * len(ts))
            gains = doc["gain"]["ism"]
            pair = f"{gains['s'].get('300', float('nan')):.2f} / {gains['t'].get('300', float('nan')):.2f}"
            minutes = row["steps"] * s_per_step / 60
            lines.append("| " + " | ".join([name, str(row["steps"]), f"{minutes:.1f}", *ism, *sds, pair]) + " |")
    return "\n".join(lines)


def chart(recipes: dict[str, list[dict[str, Any]]], s_per_step: float) -> str:
    """r_ISM at the gate's timesteps against idle minutes, one colour per recipe; x from 0 with a tick every
    :data:`MINUTES_TICK`, y ticks every :data:`R_TICK` over the data and 0."""
    series = []
    for k, (name, rows) in enumerate(recipes.items()):
        color = PALETTE[k % len(PALETTE)]
        for t in GATE_T:
            points = [(row["steps"] * s_per_step / 60, row["doctor"]["restoring"]["ism"][t]) for row in rows
                      if t in row["doctor"]["restoring"]["ism"]]
            series.append(Series(points, f"{name} t={t}", color, dashed=t != GATE_T[0], markers=True))
    values = [y for spec in series for _, y in spec.points] + [0.0]
    last = max(x for spec in series for x, _ in spec.points)
    # One tick of room below and above the data, so markers do not sit on the frame.
    lo, hi = math.floor(min(values) / R_TICK - 0.5) * R_TICK, math.ceil(max(values) / R_TICK + 0.5) * R_TICK
    x_ticks = [(m, f"{m:g}") for m in range(0, int(math.ceil(last / MINUTES_TICK)) * MINUTES_TICK + 1, MINUTES_TICK)]
    y_ticks = [(lo + k * R_TICK, f"{lo + k * R_TICK:+.1f}") for k in range(round((hi - lo) / R_TICK) + 1)]
    return line_chart_svg(series, "r_ISM on the test views against training time (solid t=300, dashed 450)",
                          x_range=(0, x_ticks[-1][0]), y_range=(lo, hi), x_ticks=x_ticks, y_ticks=y_ticks,
                          reference_y=[0.0], x_label="idle minutes on two cores (steps × idle pace)",
                          size_px=(760, 320))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes_dir", type=Path)
    parser.add_argument("--recipes", nargs="*", default=None, help="recipe folder names, in this order (default all)")
    parser.add_argument("--s-per-step", type=float, required=True, help="idle seconds per training step")
    parser.add_argument("--svg", type=Path, default=None)
    args = parser.parse_args(argv)
    names = args.recipes or sorted(p.name for p in args.recipes_dir.iterdir() if (p / "segments.jsonl").is_file())
    recipes = {name: read_recipe(args.recipes_dir / name) for name in names}
    print(table(recipes, args.s_per_step))
    print(json.dumps({"bench": "prior_recipes", "s_per_step": args.s_per_step, "recipes": {
        name: [{"steps": row["steps"], "idle_minutes": round(row["steps"] * args.s_per_step / 60, 2),
                "restoring": row["doctor"]["restoring"], "verdict": row["doctor"]["verdict"]} for row in rows]
        for name, rows in recipes.items()}}))
    if args.svg is not None:
        args.svg.write_text(chart(recipes, args.s_per_step))


if __name__ == "__main__":
    main()
