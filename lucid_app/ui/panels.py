"""Layout pieces shared by the app's tabs (no handlers, no tensors)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from lucid_app.ui.job_display import LOSS_AXIS


def run_outputs_panel(c: dict[str, Any], config_text: str = "", loss_plot_id: str | None = None,
                      viewer_prefix: str | None = None) -> None:
    """Add a run's plots, splat and mesh viewers, turntable, downloads, config and job details to ``c``.

    The loss is on a symmetric log scale and t / s as running means (``handlers.plot_frames``). ``viewer_prefix``
    gives the viewers the element ids ``<prefix>-splat-viewer`` and ``<prefix>-mesh-viewer`` (one tab only: ids are
    unique in a page).

    The keys it creates are the ones ``handlers.GENERATE_OUTPUTS`` / ``RESULT_OUTPUTS`` name (after ``status``,
    ``preview`` and the controls, which each tab lays out itself).
    """
    with gr.Row():
        c["loss_plot"] = gr.LinePlot(x="step", y="value", color="series", title="Loss (symmetric log scale)",
                                     y_title=LOSS_AXIS, height=240, elem_id=loss_plot_id)
        c["schedule_plot"] = gr.LinePlot(x="step", y="value", color="series", title="t, s (running means) and δ_T",
                                         y_title="timestep index", height=240)
    with gr.Row():
        c["model3d"] = gr.Model3D(label="Gaussian splat (framed view of model.ply)", height=420,
                                  elem_id=f"{viewer_prefix}-splat-viewer" if viewer_prefix else None)
        c["mesh3d"] = gr.Model3D(label="Mesh (.glb)", height=420, camera_position=(90, 75, None),
                                 elem_id=f"{viewer_prefix}-mesh-viewer" if viewer_prefix else None)
    c["video"] = gr.Video(label="Turntable", autoplay=True, loop=True, height=360)
    with gr.Row():
        c["dl_ply"] = gr.DownloadButton("Download .ply", visible=False)
        c["dl_video"] = gr.DownloadButton("Download .mp4", visible=False)
        c["dl_config"] = gr.DownloadButton("Download config.yaml", visible=False)
        c["dl_mesh"] = gr.DownloadButton("Download mesh.glb", visible=False)
    with gr.Accordion("Resolved config (read-only)", open=False):
        c["config"] = gr.Code(config_text, language="yaml", interactive=False)
    with gr.Accordion("Job details", open=False):
        c["job"] = gr.JSON(label="Job")
