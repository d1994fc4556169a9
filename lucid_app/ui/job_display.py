"""What the app shows of a job, as pure functions of its snapshot: the status line, the plots' data (each loss term
smoothed, with its raw values on request; t, s and δ_T), the state of the Generate / Pause-Resume / Stop buttons,
and the order in which the 3D viewers get their files (issues 14, 27).

No tensors, no I/O: :mod:`lucid_app.ui.handlers` calls these with :class:`~lucid_app.app.job_board.JobView` snapshots.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from lucid_app.app.job_board import JobView
from lucid_app.train.eta import SLOW_RUN_THRESHOLD_S, format_duration
from lucid_app.train.events import StepEvent
from lucid_app.ui.errors import public_text

MAX_PLOT_POINTS = 600
# Losses, t and s vary from step to step: the plots show their mean over the last this-many steps (fewer at the start,
# so every line starts at step 1).
SMOOTH_STEPS = 25
# The loss plots: each shows its terms (``StepEvent.losses`` names) smoothed, and with its toggle their raw values.
# The total is their sum and is left out: it lay on top of the guidance term and hid it.
LOSS_PLOTS = {"guidance": ("guidance",), "regularisers": ("tv_rgb", "tv_depth", "scale")}
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


def record_status_html(status: dict[str, Any], steps: Sequence[StepEvent], total_steps: int) -> str:
    """The status line of a reopened past run: how it ended (``metrics.jsonl``'s status record: done, stopped,
    failed; "not finished" without one) at which step of how many, its Gaussians, with the progress bar."""
    last = steps[-1] if steps else None
    step = int(status.get("step", last.step if last else 0) or 0)
    total = max(total_steps, step, 1)
    outcome = str(status.get("status", "")) or "not finished"
    text = f"Past run — {outcome.capitalize()} at step {step} / {total}"
    if last is not None:
        text += f" · {last.n_gaussians:,} Gaussians"
    if status.get("message"):
        text += f" — {public_text(str(status['message']))}"
    bar = f"<progress value='{step}' max='{total}' style='width:100%'></progress>"
    return f"<div class='lucid-status' data-state='past'>{html.escape(text)}{bar}</div>"


def trailing_mean(values: np.ndarray, window: int = SMOOTH_STEPS) -> np.ndarray:
    """Mean of each value and the ``window - 1`` before it (of all before it at the start): [N] → [N]."""
    sums = np.cumsum(np.concatenate([[0.0], np.asarray(values, dtype=np.float64)]))
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (sums[index] - sums[start]) / (index - start)


def smoothed_name(name: str) -> str:
    """A smoothed series' legend name; the same at every step, so the plot keeps one line per series."""
    return f"{name} (mean of last {SMOOTH_STEPS})"


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    # Typed columns even when empty, so the plot's axes are numeric from the first (empty) update on.
    dtypes = {"step": "int64", "value": "float64", "series": "str"}
    return pd.DataFrame(rows, columns=list(dtypes)).astype(dtypes)


def loss_frame(steps: Sequence[StepEvent], terms: tuple[str, ...], raw: bool = False) -> pd.DataFrame:
    """Long-format frame (step, value, series) of the loss ``terms``: each as its :func:`trailing_mean`, and with
    ``raw`` also as logged. A term that is zero at every step (a regulariser with weight 0) is left out."""
    steps = [e for e in steps if not e.skipped]
    stride = max(1, len(steps) // MAX_PLOT_POINTS)
    rows = []
    for name in terms:
        values = np.array([e.losses.get(name, 0.0) for e in steps], dtype=np.float64)
        if not values.any():
            continue
        means = trailing_mean(values)
        for i in range(0, len(steps), stride):
            rows.append({"step": steps[i].step, "value": means[i], "series": smoothed_name(name)})
            if raw:
                rows.append({"step": steps[i].step, "value": values[i], "series": f"{name} (raw)"})
    return _frame(rows)


def schedule_frame(steps: Sequence[StepEvent]) -> pd.DataFrame:
    """Long-format frame (step, value, series) of t and s (drawn at random every step, shown as their
    :func:`trailing_mean`) and δ_T (as it is)."""
    steps = [e for e in steps if not e.skipped]
    stride = max(1, len(steps) // MAX_PLOT_POINTS)
    means = {name: trailing_mean(np.array([getattr(e, name) for e in steps], dtype=np.float64))
             for name in ("t", "s")}
    rows = [{"step": steps[i].step, "value": value, "series": series}
            for i in range(0, len(steps), stride)
            for series, value in ((smoothed_name("t"), means["t"][i]), (smoothed_name("s"), means["s"][i]),
                                  ("δ_T", steps[i].delta_t))]
    return _frame(rows)


def plot_frames(steps: Sequence[StepEvent], raw: dict[str, bool] | None = None) -> dict[str, pd.DataFrame]:
    """The frames of every plot: one per :data:`LOSS_PLOTS` entry (``raw[name]`` adds the raw values), and
    ``schedule`` (t, s, δ_T)."""
    raw = raw or {}
    frames = {name: loss_frame(steps, terms, raw.get(name, False)) for name, terms in LOSS_PLOTS.items()}
    frames["schedule"] = schedule_frame(steps)
    return frames


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
