"""Layout pieces shared by the app's tabs (no handlers, no tensors)."""

from __future__ import annotations

from typing import Any

import gradio as gr


def run_outputs_panel(c: dict[str, Any], config_text: str = "", loss_plot_id: str | None = None) -> None:
    """Add a run's plots, splat and mesh viewers, turntable, downloads, config and job details to ``c``.

    The keys it creates are the ones ``handlers.GENERATE_OUTPUTS`` / ``RESULT_OUTPUTS`` name (after ``status``,
    ``preview`` and the controls, which each tab lays out itself).
    """
    with gr.Row():
        c["loss_plot"] = gr.LinePlot(x="step", y="value", color="series", title="Loss", height=220,
                                     elem_id=loss_plot_id)
        c["schedule_plot"] = gr.LinePlot(x="step", y="value", color="series", title="t, s, δ_T", height=220)
    with gr.Row():
        c["model3d"] = gr.Model3D(label="Gaussian splat (.ply)", height=360)
        c["mesh3d"] = gr.Model3D(label="Mesh (.glb)", height=360)
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
