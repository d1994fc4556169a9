"""What the app shows of a job, as pure functions of its snapshot: the status line, the plots' data, the state of the
Generate / Pause-Resume / Stop buttons, and the order in which the 3D viewers get their files (issue 14).

No tensors, no I/O: :mod:`lucid_app.ui.handlers` calls these with :class:`~lucid_app.app.job_board.JobView` snapshots.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from lucid_app.app.job_board import JobView
from lucid_app.train.eta import SLOW_RUN_THRESHOLD_S, format_duration
from lucid_app.ui.errors import public_text

MAX_PLOT_POINTS = 600
# t and s are drawn at random each step: the plot shows their running mean over this many steps.
SCHEDULE_MEAN_STEPS = 25
LOSS_AXIS = "sign(loss)·log10(1 + |loss|)"
# Pause between showing the mesh and the splat at the end of a run (see mesh_before_splat).
SPLAT_AFTER_MESH_S = 1.5


def status_html(view: JobView | None) -> str:
    """Progress text and bar of a job: state, queue position, step, s/step, Gaussian count."""
    if view is None:
        return "<div class='lucid-status'>No job yet: type a prompt and press Generate.</div>"
    last = view.last_step
    total = last.total_steps if last else view.total_steps
    step = last.step if last else 0
    if view.state == "queued":
        text = (f"Queued — position {view.position} ({view.position} job(s) ahead)" if view.position
                else "Queued — starting next")
    elif handed_back(view):
        text = (f"Stopped at step {step} — Generate is free again; this run's export goes on in the background "
                "(below)")
    elif view.state in ("running", "paused", "exporting") and view.exporting:
        done, parts = view.progress
        text = f"Exporting {view.exporting}" + (f" — frame {done} / {parts}" if parts else "…")
        step, total = (done, parts) if parts else (total, total)
    elif view.state in ("running", "paused") and last is None:
        text = "Preparing: loading the model and initialising the Gaussians…"
    elif view.state in ("running", "paused"):
        recent = view.steps[-10:]
        per_step = sum(e.seconds for e in recent) / len(recent)
        remaining_s = per_step * max(total - step, 0)
        text = (f"{'Paused' if view.state == 'paused' else 'Running'} — step {step} / {total} · "
                f"{per_step:.2f} s/step · ~{format_duration(remaining_s)} left · {last.n_gaussians:,} Gaussians · "
                f"t={last.t:.0f} · δ_T={last.delta_t:.0f} · guidance {view.controls.guidance_scale:g}")
        if remaining_s > SLOW_RUN_THRESHOLD_S:
            text += " — a very long run on this device: a CUDA GPU, or the offline demo preset, is much faster"
    elif view.state == "done":
        text = ("Stopped" if view.outcome == "stopped" else "Done") + f" — {public_text(view.message)}"
    else:
        text = f"{view.state.capitalize()} — {public_text(view.message)}"
    bar = f"<progress value='{step}' max='{max(total, 1)}' style='width:100%'></progress>"
    return f"<div class='lucid-status' data-state='{view.state}'>{html.escape(text)}{bar}</div>"


def handed_back(view: JobView) -> bool:
    """A stopped run whose export goes on in the background and whose ``model.ply`` exists: its stream ends and
    Generate is free again (issue 27: Stop hands back control at once)."""
    return view.state == "exporting" and view.outcome == "stopped" and "ply" in view.files


def export_row_html(view: JobView | None) -> str:
    """The row of a run exporting in the background: its stage and progress, or that it finished ("" for none)."""
    if view is None:
        return ""
    name = html.escape(view.prompt[:60])
    if view.finished:
        what = "finished" if view.state == "done" else public_text(view.message)
        return (f"<div class='lucid-export' data-state='{view.state}'>Export of the stopped run “{name}”: "
                f"{html.escape(what)} — its files are under Past runs.</div>")
    done, parts = view.progress
    stage = html.escape(view.exporting or "starting")
    frames = f" — frame {done} / {parts}" if parts else "…"
    bar = f"<progress value='{done}' max='{max(parts, 1)}' style='width:100%'></progress>" if parts else ""
    return (f"<div class='lucid-export' data-state='exporting'>Exporting the stopped run “{name}” in the background: "
            f"{stage}{frames}{bar}</div>")


def symlog(value: float) -> float:
    """sign(v)·log10(1 + |v|): a loss spike a thousand times the usual loss stays on the plot without flattening
    the rest (0 → 0, monotonic, about v near 0)."""
    return math.copysign(math.log10(1.0 + abs(value)), value)


def plot_frames(view: JobView | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long-format frames (step, value, series) for the loss plot and the t / s / δ_T plot.

    The losses are on a symmetric log scale (:func:`symlog`); t and s (drawn at random every step) as their running
    mean over :data:`SCHEDULE_MEAN_STEPS` steps, δ_T as it is.
    """
    steps = [e for e in (view.steps if view is not None else ()) if not e.skipped]
    stride = max(1, len(steps) // MAX_PLOT_POINTS)
    picked = steps[::stride]
    loss_rows = [{"step": e.step, "value": symlog(v), "series": name}
                 for e in picked for name, v in e.losses.items() if name in ("total", "guidance")]
    schedule_rows = []
    if steps:
        window = min(SCHEDULE_MEAN_STEPS, len(steps))
        kernel = np.ones(window) / window
        means = {name: np.convolve(np.pad(np.array([getattr(e, name) for e in steps], dtype=float), (window - 1, 0),
                                          mode="edge"), kernel, mode="valid")
                 for name in ("t", "s")}
        schedule_rows = [{"step": e.step, "value": v, "series": name}
                         for i in range(0, len(steps), stride) for e in (steps[i],)
                         for name, v in ((f"t (mean of {window})", means["t"][i]),
                                         (f"s (mean of {window})", means["s"][i]), ("δ_T", e.delta_t))]
    # Typed columns even when empty, so the plot's axes are numeric from the first (empty) update on.
    dtypes = {"step": "int64", "value": "float64", "series": "str"}
    return (pd.DataFrame(loss_rows, columns=list(dtypes)).astype(dtypes),
            pd.DataFrame(schedule_rows, columns=list(dtypes)).astype(dtypes))


def mesh_before_splat(outputs: tuple[Any, ...], names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    """Two updates of ``outputs`` (named by ``names``): all but the splat viewer (``model3d``), then, after
    :data:`SPLAT_AFTER_MESH_S` when both viewers get a file, all but the mesh viewer (``mesh3d``). Gradio 6.31's
    mesh viewer (Babylon.js) stays blank when its file arrives after the splat viewer (gsplat.js) has started."""
    splat, mesh = names.index("model3d"), names.index("mesh3d")
    yield tuple(gr.skip() if i == splat else value for i, value in enumerate(outputs))
    if outputs[splat] is not None and outputs[mesh] is not None:
        time.sleep(SPLAT_AFTER_MESH_S)
    yield tuple(gr.skip() if i == mesh else value for i, value in enumerate(outputs))


def button_states(view: JobView | None, generate_label: str = "Generate") -> dict[str, Any]:
    """The Generate button, the Pause/Resume toggle and Stop for a job's state (``GENERATE_OUTPUTS``' last three).

    Generate shows the queue position or the step and is disabled while the job goes, until a stopped run is
    :func:`handed_back`; the toggle reads "Pause" or "Resume" and is enabled only while the job trains; Stop is
    enabled while it is queued or training.
    """
    if view is None or view.finished or handed_back(view):
        return {"generate": gr.Button(value=generate_label, interactive=True),
                "pause_toggle": gr.Button(value="Pause", interactive=False),
                "stop": gr.Button(value="Stop", interactive=False)}
    last = view.last_step
    if view.state == "queued":
        label = f"Queued #{view.position}" if view.position else "Starting…"
    elif view.exporting:
        label = "Exporting…"
    elif last is None:
        label = "Loading the model…"
    else:
        label = f"{'Paused' if view.state == 'paused' else 'Running'} · step {last.step} / {last.total_steps}"
    training = view.state in ("running", "paused") and not view.exporting
    stoppable = view.state in ("queued", "running", "paused")
    return {"generate": gr.Button(value=label, interactive=False),
            "pause_toggle": gr.Button(value="Resume" if view.state == "paused" else "Pause", interactive=training),
            "stop": gr.Button(value="Cancel" if view.state == "queued" else "Stop", interactive=stoppable)}
