"""Layout pieces shared by the app's tabs (no handlers, no tensors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from lucid_app.ui.job_display import LOSS_PLOTS

# Shown above each plot: what its lines are.
PLOT_TITLES = {"guidance": "Guidance loss", "regularisers": "Regularisers (weighted)",
               "schedule": "t and s (means), δ_T"}
# The class of the images a click enlarges to the whole window (``layout.ZOOM_JS``), and of those that fill their box
# whatever their pixel size (``layout.APP_CSS``).
ZOOM_CLASS = "lucid-zoom"
FILL_CLASS = "lucid-fill"


def plot_title(name: str, raw: bool = False) -> str:
    """A plot's title; a loss plot says when it shows its raw values too. (A new title also makes Gradio 6.31's
    LinePlot rebuild its chart, and with it the colour scale, which otherwise keeps the series of its first value:
    a series added later would never be drawn.)"""
    return PLOT_TITLES[name] + (" — raw values too" if raw else "")


def plot_key(name: str) -> str:
    """The component key of a plot (``<name>_plot``), as ``handlers.GENERATE_OUTPUTS`` names it."""
    return f"{name}_plot"


def raw_key(name: str) -> str:
    """The component key of a loss plot's raw-values toggle."""
    return f"{name}_raw"


def run_outputs_panel(c: dict[str, Any], config_text: str = "", plot_prefix: str | None = None,
                      viewer_prefix: str | None = None) -> None:
    """Add a run's plots, splat and mesh viewers, turntable, downloads, config and job details to ``c``.

    The plots (``job_display.plot_frames``): each loss term smoothed over the last ``job_display.SMOOTH_STEPS`` steps,
    with a toggle for its raw values, and t / s (means) with δ_T. ``plot_prefix`` and ``viewer_prefix`` give the plots
    the element ids ``<prefix>-<name>-plot`` and the viewers ``<prefix>-splat-viewer`` / ``<prefix>-mesh-viewer`` (one
    tab only: ids are unique in a page).

    The keys it creates are the ones ``handlers.GENERATE_OUTPUTS`` / ``RESULT_OUTPUTS`` name (after ``status``,
    ``preview`` and the controls, which each tab lays out itself), and the toggles (:func:`raw_key`).
    """
    with gr.Row(equal_height=False):
        for name in (*LOSS_PLOTS, "schedule"):
            with gr.Column(min_width=280):
                c[plot_key(name)] = gr.LinePlot(
                    x="step", y="value", color="series", title=plot_title(name), height=240,
                    y_title="timestep index" if name == "schedule" else "loss",
                    elem_id=f"{plot_prefix}-{name}-plot" if plot_prefix else None,
                )
                if name in LOSS_PLOTS:
                    c[raw_key(name)] = gr.Checkbox(False, label="Raw values too",
                                                   elem_id=f"{plot_prefix}-{name}-raw" if plot_prefix else None)
    with gr.Row():
        c["model3d"] = gr.Model3D(label="Gaussian splat (framed view of model.ply)", height=420,
                                  elem_id=f"{viewer_prefix}-splat-viewer" if viewer_prefix else None)
        c["mesh3d"] = gr.Model3D(label="Mesh (.glb)", height=420, camera_position=(90, 75, None),
                                 elem_id=f"{viewer_prefix}-mesh-viewer" if viewer_prefix else None)
    c["video"] = gr.Video(label="Turntable", autoplay=True, loop=True, height=512,
                          elem_id=f"{viewer_prefix}-turntable" if viewer_prefix else None)
    with gr.Row():
        c["dl_ply"] = gr.DownloadButton("Download .ply", visible=False)
        c["dl_video"] = gr.DownloadButton("Download .mp4", visible=False)
        c["dl_config"] = gr.DownloadButton("Download config.yaml", visible=False)
        c["dl_mesh"] = gr.DownloadButton("Download mesh.glb", visible=False)
        c["dl_mesh_zip"] = gr.DownloadButton("Download .obj (.zip)", visible=False)
    with gr.Accordion("Resolved config (read-only)", open=False):
        c["config"] = gr.Code(config_text, language="yaml", interactive=False,
                              elem_id=f"{viewer_prefix}-config" if viewer_prefix else None)
    with gr.Accordion("Job details", open=False):
        c["job"] = gr.JSON(label="Job")


def wire_plot_toggles(c: dict[str, Any], show_raw: Callable[[str, bool, gr.Request], Any]) -> None:
    """Each loss plot's raw-values toggle in ``c`` redraws its plot: the new values (``show_raw(name, raw, request)``,
    ``AppHandlers.show_raw``), then a new title, which rebuilds the chart with the raw series' colour
    (:func:`plot_title`; in one update the chart is rebuilt before its new values arrive)."""
    for name in LOSS_PLOTS:
        def toggle(raw: bool, request: gr.Request, name: str = name) -> Any:
            return show_raw(name, raw, request)

        def retitle(raw: bool, name: str = name) -> Any:
            return gr.LinePlot(title=plot_title(name, bool(raw)))

        c[raw_key(name)].change(toggle, inputs=c[raw_key(name)], outputs=c[plot_key(name)], api_visibility="private",
                                show_progress="hidden").then(retitle, inputs=c[raw_key(name)],
                                                             outputs=c[plot_key(name)], api_visibility="private",
                                                             show_progress="hidden")
