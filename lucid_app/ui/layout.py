"""The app's page: one ``gr.Blocks`` with the text-to-3D tab, wired to :class:`~lucid_app.ui.handlers.AppHandlers`.

Named API endpoints (usable from ``gradio_client``): ``/generate`` (streams), ``/set_controls``, ``/pause``,
``/resume``, ``/toggle_pause``, ``/stop``, ``/skip_export``, ``/result``, ``/resume_run`` (streams); the guidance-lab
tab (``guidance_tab.py``: ``/set_negative``, ``/inspect``, ``/ab_run``) and the Avatar tab (``avatar_tab.py``) add
their own. Layout only: what happens on
an event lives in ``handlers.py``.

What a person sees first (issue 14): prompt, negative prompt, preset/model and Generate at the top of the left column
(above the fold at 1400×1000 and on a 390 px phone), the examples folded; the right column holds the status, the
live preview and the run's controls, and sticks to the top of the window on wide screens so they stay in view while
the settings scroll. On a narrow screen, pressing Generate scrolls the status into view. Plots, viewers, turntable and
downloads come below, full width.

At the size people expect (issue 27): the preview fills its box (front, side, back, side; the final views at the
export's size at the end), and a click on it, on the A/B views or on the inspector's grid shows the image on the
whole window (:data:`ZOOM_JS`; a second click or Escape closes it). The examples offered are the ones the chosen model
can make (``examples.py``); the others are listed with the reason.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping

import gradio as gr

from lucid_app.app.identity import OwnerKeys
from lucid_app.app.jobs import JobManager
from lucid_app.app.model_registry import ModelRegistry
from lucid_app.config import PAPER_NEGATIVE, GuidanceConfig, InitConfig
from lucid_app.config.presets import list_presets, load_config
from lucid_app.priors.model_ref import ModelRef
from lucid_app.ui.avatar_tab import build_avatar_tab
from lucid_app.ui.examples import examples_for, unavailable_note
from lucid_app.ui.form import (
    APP_EXPORTS_MESH,
    DEFAULT_PRESET,
    FIELD,
    FORM_FIELDS,
    PRESET_FIELDS,
    SLIDER_RANGES,
    form_values,
)
from lucid_app.ui.guidance_tab import build_guidance_tab
from lucid_app.ui.handlers import EXPORT_ROW_OUTPUTS, GENERATE_OUTPUTS, OPEN_OUTPUTS, AppHandlers
from lucid_app.ui.panels import FILL_CLASS, ZOOM_CLASS, run_outputs_panel, wire_plot_toggles

TITLE = "lucid-app — text-to-3D Gaussian Splatting with Interval Score Matching"
HEADING = "### lucid-app · text-to-3D Gaussian splatting with Interval Score Matching"
NARROW_SCREEN_PX = 800
PREVIEW_HEIGHT_PX = 600
APP_CSS = f"""
.{FILL_CLASS} img {{ object-fit: contain; width: 100%; height: 100%; }}
.{ZOOM_CLASS} img {{ cursor: zoom-in; }}
.lucid-overlay {{
  position: fixed; inset: 0; z-index: 2147483647; background: #fff; cursor: zoom-out;
  display: flex; align-items: center; justify-content: center;
}}
.lucid-overlay img {{ width: 100vw; height: 100vh; object-fit: contain; }}
/* The inspector's grid at its own pixel size (its tiles are enlarged to readable pictures), scrolled when wider. */
#lucid-inspect-grid {{ overflow: auto; }}
#lucid-inspect-grid * {{ justify-content: flex-start !important; align-items: flex-start !important; }}
#lucid-inspect-grid img {{ width: auto; height: auto; max-width: none; max-height: none; object-fit: none; }}
.lucid-notice p {{ font-size: 0.85em; opacity: 0.85; margin: 0; }}
.lucid-unavailable p {{ font-size: 0.85em; opacity: 0.6; margin: 0; }}
/* A dropdown's text never runs under its arrow. */
.lucid-dropdown input {{ text-overflow: ellipsis; padding-right: 2em !important; }}
@media (min-width: {NARROW_SCREEN_PX}px) {{
  #lucid-live {{ position: sticky; top: 8px; align-self: flex-start; }}
}}
@media (max-width: {NARROW_SCREEN_PX - 1}px) {{
  /* A phone: the preset and the model on lines of their own, the negative prompt shown whole. */
  #lucid-choose, #lucid-choose .form {{ flex-direction: column !important; }}
  #lucid-choose .form, #lucid-choose .block {{ width: 100% !important; }}
  #lucid-negative textarea {{ min-height: 6.5em; }}
}}
"""
# How often the background-export row refreshes.
EXPORT_ROW_EVERY_S = 1.0
# Click-to-enlarge: a click on an image inside an element of class ZOOM_CLASS shows a copy of it on the whole window,
# in an overlay on the page's body (above every stacking context); a click on it or Escape closes it. Delegated from
# the document, so images that arrive later (previews, results) work too.
ZOOM_JS = f"""() => {{
  const close = () => document.querySelectorAll('.lucid-overlay').forEach(o => o.remove());
  document.addEventListener('click', (event) => {{
    if (event.target.closest('.lucid-overlay')) {{ close(); return; }}
    const img = event.target.closest('img');
    if (!img || !img.closest('.{ZOOM_CLASS}')) return;
    close();
    const overlay = document.createElement('div');
    overlay.className = 'lucid-overlay';
    const copy = document.createElement('img');
    copy.src = img.src; copy.alt = img.alt || 'enlarged view';
    overlay.appendChild(copy); document.body.appendChild(overlay);
    event.stopPropagation(); event.preventDefault();
  }}, true);
  document.addEventListener('keydown', (event) => {{ if (event.key === 'Escape') close(); }});
}}"""
# Runs in the browser before ``generate``: on a narrow screen the status and preview sit below the form, so bring them
# into view. Gradio passes the inputs' then the outputs' values and sends back what this returns as the inputs.
SCROLL_TO_STATUS_JS = f"""(...args) => {{
  if (window.innerWidth < {NARROW_SCREEN_PX}) document.getElementById('lucid-status')?.scrollIntoView();
  return args.slice(0, {len(FORM_FIELDS)});
}}"""


def build_demo(jobs: JobManager, default_model: str = "", default_preset: str = DEFAULT_PRESET, *,
               shared_runs: bool = False, smpl_dir: str = "", models: ModelRegistry | None = None,
               owner_keys: OwnerKeys | None = None) -> gr.Blocks:
    """The app's ``gr.Blocks`` over ``jobs``. Launch it without ``allowed_paths``: files reach clients only through
    the handlers (:mod:`lucid_app.ui.served_files`).

    ``default_model``: a name of ``models`` ("" = each preset's own); ``shared_runs``: every visitor views every run
    (default: each owner its own); ``smpl_dir``: the server's SMPL folder for the Avatar tab ("" = none);
    ``models``: the models clients pick by name (default: the built-in ones); ``owner_keys``: derives owner ids
    (default: from the outputs folder's secret). See :class:`~lucid_app.ui.handlers.AppHandlers`.
    """
    handlers = AppHandlers(jobs, shared_runs=shared_runs, smpl_dir=smpl_dir, models=models, owner_keys=owner_keys)
    start = form_values(load_config(default_preset))
    cuda = jobs.device.type == "cuda"
    first_examples = examples_for(default_model, cuda, handlers.models.refs())
    c: dict[str, gr.components.Component] = {}

    notices = handlers.setting_notices(default_model, default_preset, PAPER_NEGATIVE, start["perp_neg"])

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(HEADING)
        c["banner"] = gr.Markdown(elem_id="lucid-banner")
        with gr.Tab("Text-to-3D"):
            with gr.Row():
                with gr.Column(scale=2):
                    c["prompt"] = gr.Textbox(label="Prompt", value=start["prompt"], lines=1, max_lines=3,
                                             elem_id="lucid-prompt")
                    c["negative"] = gr.Textbox(label="Negative prompt", value=PAPER_NEGATIVE, lines=1, max_lines=3,
                                               elem_id="lucid-negative")
                    c["negative_notice"] = gr.Markdown(notices[0], elem_id="lucid-negative-notice",
                                                       elem_classes="lucid-notice")
                    with gr.Row(elem_id="lucid-choose"):
                        c["preset"] = gr.Dropdown(list_presets(), value=default_preset, label="Preset", min_width=140,
                                                  elem_classes="lucid-dropdown")
                        # Any text is accepted here, so an API client's unknown name gets the handler's own line.
                        c["model"] = gr.Dropdown(
                            handlers.models.choices(), value=default_model, allow_custom_value=True, label="Model",
                            min_width=160, elem_classes="lucid-dropdown", elem_id="lucid-model",
                        )
                    c["generate"] = gr.Button("Generate", variant="primary", elem_id="lucid-generate")
                    with gr.Accordion("Example prompts", open=False, elem_id="lucid-examples-box"):
                        c["examples"] = gr.Dataset(
                            components=[c["prompt"], c["preset"]], label="Examples this model can make",
                            samples=[[e.prompt, e.preset] for e in first_examples if not e.reason],
                            elem_id="lucid-examples", headers=["Prompt", "Preset"],
                        )
                        c["examples_note"] = gr.Markdown(unavailable_note(first_examples),
                                                         elem_id="lucid-examples-note",
                                                         elem_classes="lucid-unavailable")
                    with gr.Row():
                        c["method"] = gr.Radio(list(typing.get_args(_hint(GuidanceConfig, "method"))),
                                               value=start["method"], label="Guidance")
                        c["init_shape"] = gr.Dropdown(list(typing.get_args(_hint(InitConfig, "shape"))),
                                                      value=start["init_shape"], label="Initialisation")
                        with gr.Column(min_width=120):
                            c["perp_neg"] = gr.Checkbox(value=start["perp_neg"], label="Perp-Neg")
                            c["perp_neg_notice"] = gr.Markdown(notices[1], elem_id="lucid-perp-neg-notice",
                                                               elem_classes="lucid-notice")
                            c["export_mesh"] = gr.Checkbox(value=APP_EXPORTS_MESH, label="Export mesh (.glb)")
                    with gr.Row():
                        min_steps, max_steps = FIELD["steps"].limits
                        c["steps"] = gr.Number(start["steps"], label="Steps", precision=0, minimum=min_steps,
                                               maximum=max_steps)
                        c["seed"] = gr.Number(start["seed"], label="Seed", precision=0, minimum=0)
                        c["preview_every"] = gr.Number(start["preview_every"], label="Preview every N steps",
                                                       precision=0, minimum=0,
                                                       info="and every few seconds; 0 = no preview")
                    with gr.Row():
                        c["guidance_scale"] = gr.Slider(*SLIDER_RANGES["guidance_scale"], start["guidance_scale"],
                                                        step=0.5, label="Guidance scale")
                        c["delta_t"] = gr.Slider(*SLIDER_RANGES["delta_t"], start["delta_t"], step=1,
                                                 label="δ_T (final)")
                    with gr.Accordion("Advanced", open=False):
                        lo_px, hi_px = FIELD["resolution"].limits
                        with gr.Row():
                            c["resolution"] = gr.Slider(lo_px, hi_px, start["resolution"], step=8,
                                                        label="Render resolution (px)")
                            c["batch_size"] = gr.Slider(1, 8, start["batch_size"], step=1, label="Views per step")
                        with gr.Row():
                            c["radius_min"] = gr.Number(start["radius_min"], label="Radius min")
                            c["radius_max"] = gr.Number(start["radius_max"], label="Radius max")
                        with gr.Row():
                            c["polar_min_deg"] = gr.Number(start["polar_min_deg"], label="Polar min (°)")
                            c["polar_max_deg"] = gr.Number(start["polar_max_deg"], label="Polar max (°)")
                        with gr.Row():
                            c["fovy_min_rad"] = gr.Number(start["fovy_min_rad"], label="FoV-y min (rad)")
                            c["fovy_max_rad"] = gr.Number(start["fovy_max_rad"], label="FoV-y max (rad)")
                        with gr.Row():
                            c["delta_t_start"] = gr.Number(start["delta_t_start"], label="δ_T start", precision=0)
                            c["xs_delta_t"] = gr.Number(start["xs_delta_t"], label="δ_S (inversion stride)",
                                                        precision=0)
                            c["xs_inv_steps"] = gr.Number(start["xs_inv_steps"], label="Inversion steps",
                                                          precision=0)
                            c["lambda_guidance"] = gr.Number(start["lambda_guidance"], label="λ (guidance weight)")
                        c["extra_overrides"] = gr.Textbox(
                            label="More overrides (one section.key=value per line)", lines=3,
                            elem_id="lucid-extra",
                            placeholder="init.num_points=2000\nexport.turntable_frames=120",
                        )

                with gr.Column(scale=3, elem_id="lucid-live"):
                    c["status"] = gr.HTML(elem_id="lucid-status")
                    c["preview"] = gr.Image(label="Views: front, side, back, side (click to enlarge)", type="numpy",
                                            interactive=False, elem_id="lucid-preview", height=PREVIEW_HEIGHT_PX,
                                            elem_classes=[ZOOM_CLASS, FILL_CLASS], buttons=["download", "fullscreen"])
                    with gr.Row():
                        c["gs_live"] = gr.Slider(*SLIDER_RANGES["guidance_scale"], start["guidance_scale"], step=0.5,
                                                 label="Guidance scale (live)")
                        c["dt_live"] = gr.Slider(*SLIDER_RANGES["delta_t"], start["delta_t"], step=1,
                                                 label="δ_T (live)")
                    with gr.Row():
                        c["pause_toggle"] = gr.Button("Pause", interactive=False, elem_id="lucid-pause")
                        c["stop"] = gr.Button("Stop", variant="stop", interactive=False, elem_id="lucid-stop")
                    c["control_msg"] = gr.Markdown(elem_id="lucid-control-msg")
                    with gr.Row():
                        c["export_row"] = gr.HTML(elem_id="lucid-export-row")
                        c["skip_export"] = gr.Button("Skip export", visible=False, size="sm", scale=0,
                                                     elem_id="lucid-skip-export")
            run_outputs_panel(c, handlers.config_preview(default_preset), plot_prefix="lucid", viewer_prefix="lucid")
            with gr.Accordion("Past runs", open=False):
                with gr.Row():
                    c["runs"] = gr.Dropdown([], label="Your past runs", scale=3, elem_id="lucid-runs")
                    c["refresh_runs"] = gr.Button("Refresh", scale=1, elem_id="lucid-refresh-runs")
                    c["open_run"] = gr.Button("Open", scale=1, elem_id="lucid-open-run")
                with gr.Row():
                    c["interrupted"] = gr.Dropdown([], label="Interrupted runs (a server restart stopped them)",
                                                   scale=3, elem_id="lucid-interrupted")
                    c["resume_run"] = gr.Button("Resume", scale=1, elem_id="lucid-resume-run")
        build_guidance_tab(handlers, text_negative=c["negative"])
        build_avatar_tab(handlers, banner=c["banner"])
        # API-only components of ``/result``.
        with gr.Column(visible=False):
            c["api_run"] = gr.Textbox(label="run")
            api_files = [gr.File(label=name) for name in ("ply", "video", "config", "mesh")]
            api_summary = gr.JSON(label="summary")
            c["pause"], c["resume"] = gr.Button("Pause"), gr.Button("Resume")

        # preprocess=False on the events whose inputs are plain values: the handlers get what the client sent and
        # check it themselves (form.checked_value), so 2.5 steps, NaN or "abc" get one line naming the field rather
        # than Gradio's rounding to 2 or its unexplained error.
        c["generate"].click(
            handlers.generate, inputs=[c[name] for name in FORM_FIELDS], outputs=[c[n] for n in GENERATE_OUTPUTS],
            api_name="generate", concurrency_limit=None, show_progress="hidden", js=SCROLL_TO_STATUS_JS,
            preprocess=False,
        )
        gr.on([c["gs_live"].release, c["dt_live"].release], handlers.set_controls,
              inputs=[c["gs_live"], c["dt_live"]], outputs=c["control_msg"], api_name="set_controls",
              concurrency_limit=None, show_progress="hidden", preprocess=False)
        for action in ("pause", "resume", "stop"):
            c[action].click(getattr(handlers, action), outputs=c["control_msg"], api_name=action,
                            concurrency_limit=None, show_progress="hidden")
        c["skip_export"].click(handlers.skip_export, outputs=c["control_msg"], api_name="skip_export",
                               concurrency_limit=None, show_progress="hidden")
        c["shown_export"] = gr.State()
        gr.Timer(EXPORT_ROW_EVERY_S).tick(
            handlers.export_row, inputs=c["shown_export"], outputs=[c[n] for n in EXPORT_ROW_OUTPUTS],
            api_visibility="private", show_progress="hidden",
        )
        c["resume_run"].click(
            handlers.resume_run, inputs=c["interrupted"], outputs=[c[n] for n in GENERATE_OUTPUTS],
            api_name="resume_run", concurrency_limit=None, show_progress="hidden",
        )
        c["pause_toggle"].click(handlers.toggle_pause, outputs=[c["control_msg"], c["pause_toggle"]],
                                api_name="toggle_pause", concurrency_limit=None, show_progress="hidden")
        notice_inputs = [c["model"], c["preset"], c["negative"], c["perp_neg"]]
        gr.on([c["model"].change, c["preset"].change, c["negative"].change, c["perp_neg"].change],
              handlers.setting_notices,
              inputs=notice_inputs, outputs=[c["negative_notice"], c["perp_neg_notice"]], api_visibility="private",
              show_progress="hidden", trigger_mode="always_last")
        c["api_run"].submit(handlers.result, inputs=c["api_run"], outputs=[*api_files, api_summary],
                            api_name="result", concurrency_limit=None)
        # The live sliders follow the form's starting values.
        c["guidance_scale"].change(lambda v: v, c["guidance_scale"], c["gs_live"], api_visibility="private",
                                   show_progress="hidden")
        c["delta_t"].change(lambda v: v, c["delta_t"], c["dt_live"], api_visibility="private",
                            show_progress="hidden")
        c["preset"].change(handlers.preset_changed, inputs=[c["preset"], c["prompt"]],
                           outputs=[*(c[n] for n in PRESET_FIELDS), c["prompt"]], api_visibility="private")
        c["preset"].change(handlers.config_preview, inputs=c["preset"], outputs=c["config"],
                           api_visibility="private")
        c["model"].change(lambda model: _examples_update(model, cuda, handlers.models.refs()), inputs=c["model"],
                          outputs=[c["examples"], c["examples_note"]], api_visibility="private",
                          show_progress="hidden")
        c["examples"].click(lambda sample: (sample[0], sample[1]), inputs=c["examples"],
                            outputs=[c["prompt"], c["preset"]], api_visibility="private", show_progress="hidden")
        wire_plot_toggles(c, handlers.show_raw)
        # Read-only lists every page load asks for: not queued one at a time behind other visitors' page loads.
        gr.on([demo.load, c["refresh_runs"].click], handlers.runs_choices, outputs=c["runs"],
              api_visibility="private", concurrency_limit=None)
        gr.on([demo.load, c["refresh_runs"].click], handlers.interrupted_choices, outputs=c["interrupted"],
              api_visibility="private", concurrency_limit=None)
        # The splat goes to the viewer after the mesh (handlers.mesh_before_splat): through a State, then a second step.
        splat_file = gr.State()
        c["open_run"].click(handlers.open_run, inputs=c["runs"],
                            outputs=[splat_file if n == "model3d" else c[n] for n in OPEN_OUTPUTS],
                            api_visibility="private").then(handlers.splat_after_mesh, inputs=splat_file,
                                                           outputs=c["model3d"], api_visibility="private")
        demo.unload(handlers.unload)
    return demo


def _examples_update(model: str, cuda: bool, models: Mapping[str, ModelRef]) -> tuple[typing.Any, str]:
    """The examples the form's ``model`` (a name of ``models``) can make, and the note on the others."""
    examples = examples_for(model, cuda, models)
    return gr.Dataset(samples=[[e.prompt, e.preset] for e in examples if not e.reason]), unavailable_note(examples)


def _hint(cls: type, name: str) -> typing.Any:
    return typing.get_type_hints(cls)[name]
