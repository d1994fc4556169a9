"""The "Negative prompts & guidance lab" tab: the negative library, Perp-Neg and live negative changes, the
pseudo-GT inspector, the prior doctor ("Check this model", ``doctor_panel.py``) and the A/B run (layout and wiring;
handlers in ``guidance_handlers.py``, ``doctor_panel.py`` and ``ab_run.py``).

Named API endpoints: ``/set_negative`` (negative text or ``@NAME``, perp_neg, perp_neg_weight, front_decay,
side_decay, front/side/back suffixes → message), ``/inspect`` (source ``latest`` / ``live`` / ``run`` / ``upload``,
run — a past run's name as ``/result`` and the past-runs list give it, usable from the API —, .ply, prompt, model,
camera mode, azimuth, elevation, radius, t list, δ_T list, seeds, variants, negative → grid image, JSON text) and
``/ab_run`` (prompt, negative, preset, model, mode, steps, seed, extra overrides → streamed status, image A, image B,
metrics A, metrics B, table), and ``/doctor`` (see ``doctor_panel.py``).
"""

from __future__ import annotations

import gradio as gr

from lucid_app.config import MAX_STEPS, PAPER_NEGATIVE
from lucid_app.config.negatives import list_negatives
from lucid_app.config.presets import list_presets, load_config
from lucid_app.ui.ab_run import AB_FIELDS, AB_MODES, AB_OUTPUTS, ABHandlers
from lucid_app.ui.doctor_panel import build_doctor_panel
from lucid_app.ui.form import DEFAULT_PRESET
from lucid_app.ui.guidance_handlers import PROMPT_FIELDS, GuidanceHandlers, default_prompt_controls
from lucid_app.ui.handlers import AppHandlers
from lucid_app.ui.panels import FILL_CLASS, ZOOM_CLASS

TAB_TITLE = "Negative prompts & guidance lab"
DEFAULT_NEGATIVE_NAME = "paper"
# Order of ``GuidanceHandlers.inspect``'s parameters (the tab builds one component per field).
INSPECT_FIELDS = ("source", "run", "ply_file", "prompt", "model", "camera", "azimuth_deg", "elevation_deg", "radius",
                  "timesteps", "delta_ts", "seeds", "variants", "negative")
INTRO = (
    "Negative prompts take the place of CFG's unconditional branch (supplementary eq. 1). Pick or edit one, save it "
    "under a new name, use it in the Text-to-3D tab, or apply it (with Perp-Neg) to the running job from its next "
    "step. The inspector shows the pseudo-ground-truths SDS and ISM pull a render towards (supplementary Fig. 1) "
    "and how much they change with the noise seed; it queues behind training on the same worker."
)
AB_IMAGE_HEIGHT_PX = 560


def build_guidance_tab(app: AppHandlers, text_negative: gr.components.Component) -> None:
    """The tab inside the caller's ``gr.Blocks``; ``text_negative`` is the Text-to-3D tab's negative prompt field
    (the "Use in Text-to-3D" button fills it)."""
    handlers = GuidanceHandlers(app)
    ab = ABHandlers(app, handlers)
    live = default_prompt_controls()
    demo = load_config(DEFAULT_PRESET)
    c: dict[str, gr.components.Component] = {}
    with gr.Tab(TAB_TITLE) as tab:
        gr.Markdown(INTRO)
        with gr.Accordion("Negative-prompt library and live changes", open=True):
            with gr.Row():
                # The user's own names join when the tab is opened (their file may change meanwhile).
                c["library"] = gr.Dropdown(list_negatives(), value=DEFAULT_NEGATIVE_NAME,
                                           label="Library (built-in and yours)", scale=3)
                c["library_refresh"] = gr.Button("Refresh", scale=1)
            c["negative"] = gr.Textbox(label="Negative prompt (edit freely; @NAME also works)", lines=2,
                                       value=PAPER_NEGATIVE, elem_id="lucid-lab-negative")
            with gr.Row():
                c["new_name"] = gr.Textbox(label="Save as (new name)", placeholder="my_negative", scale=2)
                c["save"] = gr.Button("Save as new negative", scale=1)
                c["use"] = gr.Button("Use in Text-to-3D", scale=1)
            c["library_msg"] = gr.Markdown()
            with gr.Row():
                c["perp_neg"] = gr.Checkbox(live["perp_neg"], label="Perp-Neg")
                c["perp_neg_weight"] = gr.Slider(-10, 0, live["perp_neg_weight"], step=0.1, label="Perp-Neg weight")
                c["front_decay"] = gr.Slider(0, 20, live["front_decay"], step=0.5, label="Front decay")
                c["side_decay"] = gr.Slider(0, 30, live["side_decay"], step=0.5, label="Side decay")
            with gr.Row():
                for view in ("front", "side", "back"):
                    c[f"{view}_suffix"] = gr.Textbox(live[f"{view}_suffix"], label=f"{view.capitalize()} suffix")
            c["apply"] = gr.Button("Apply to the running job", variant="primary", elem_id="lucid-apply-negative")
            c["apply_msg"] = gr.Markdown()

        with gr.Accordion("Pseudo-GT inspector: SDS vs ISM", open=True):
            with gr.Row():
                with gr.Column(scale=2):
                    c["source"] = gr.Radio([("This session's latest run", "latest"),
                                            ("The running job, now (beside training)", "live"),
                                            ("A past run", "run"), ("An uploaded .ply", "upload")],
                                           value="latest", label="Inspect")
                    with gr.Row():
                        # Any name is accepted here (the API sends one without opening the tab); the handler checks it.
                        c["run"] = gr.Dropdown([], label="Past run", scale=3, allow_custom_value=True)
                        c["run_refresh"] = gr.Button("Refresh", scale=1)
                    c["ply_file"] = gr.File(label="3DGS .ply", file_types=[".ply"], type="filepath")
                    with gr.Row():
                        c["prompt"] = gr.Textbox(demo.prompt.text, label="Prompt (for an uploaded .ply)")
                        c["model"] = gr.Dropdown(app.models.choices(), value="", allow_custom_value=True,
                                                 label="Model (for an uploaded .ply)")
                    c["camera"] = gr.Radio([("Camera sliders", "orbit"), ("Current training views", "training")],
                                           value="orbit", label="Views")
                    with gr.Row():
                        c["azimuth_deg"] = gr.Slider(-180, 180, 0, step=5, label="Azimuth (°, 0 = front)")
                        c["elevation_deg"] = gr.Slider(-30, 60, 90.0 - demo.cameras.default_polar_deg, step=5,
                                                   label="Elevation (°)")
                        c["radius"] = gr.Slider(1, 8, demo.cameras.default_radius, step=0.1, label="Radius")
                    with gr.Row():
                        c["timesteps"] = gr.Textbox("200,500", label="t (timestep indices)")
                        c["delta_ts"] = gr.Textbox("20,200", label="δ_T (ISM intervals)")
                        c["seeds"] = gr.Number(3, label="Seeds", precision=0, minimum=1)
                    with gr.Row():
                        c["variants"] = gr.Radio([("With and without", "both"), ("With the negative", "neg"),
                                                  ("Without (unconditional)", "noneg")], value="both",
                                                 label="Negative prompt")
                        c["inspect_negative"] = gr.Textbox(
                            label="Negative to inspect (text or @NAME; empty = the run's)")
                    c["inspect"] = gr.Button("Inspect", variant="primary", elem_id="lucid-inspect")
                with gr.Column(scale=3):
                    gr.Markdown("**Pseudo-GTs** (rows: method, t, δ_T, negative; per view: render x0, seeds). Click "
                                "the grid to see it on the whole window.")
                    c["grid"] = gr.Image(show_label=False, type="numpy", interactive=False,
                                         elem_id="lucid-inspect-grid", elem_classes=ZOOM_CLASS,
                                         buttons=["download", "fullscreen"])
                    c["numbers"] = gr.Code(language="json", label="Inconsistency (mean per-pixel std across seeds)",
                                           interactive=False)

        build_doctor_panel(app)

        with gr.Accordion("A/B run", open=False):
            with gr.Row():
                c["ab_prompt"] = gr.Textbox(demo.prompt.text, label="Prompt", scale=2)
                c["ab_negative"] = gr.Textbox(PAPER_NEGATIVE, label="Negative prompt (text or @NAME)", scale=2)
            with gr.Row():
                c["ab_preset"] = gr.Dropdown(list_presets(), value=DEFAULT_PRESET, label="Preset")
                c["ab_model"] = gr.Dropdown(app.models.choices(), value="", allow_custom_value=True, label="Model")
                c["ab_mode"] = gr.Radio([(label, mode) for mode, label in AB_MODES.items()], value="method",
                                        label="Compare")
            with gr.Row():
                c["ab_steps"] = gr.Number(demo.optim.steps, label="Steps", precision=0, minimum=1, maximum=MAX_STEPS,
                                          elem_id="lucid-ab-steps")
                c["ab_seed"] = gr.Number(demo.seed, label="Seed (both)", precision=0, minimum=0)
            c["ab_extra_overrides"] = gr.Textbox(label="More overrides (one section.key=value per line)", lines=2,
                                                 elem_id="lucid-ab-extra")
            c["ab_start"] = gr.Button("Run A and B", variant="primary", elem_id="lucid-ab-run")
            c["ab_status"] = gr.HTML()
            with gr.Row(equal_height=True):
                c["ab_image_a"] = gr.Image(label="A: final views (click to enlarge)", type="numpy", interactive=False,
                                           height=AB_IMAGE_HEIGHT_PX, elem_id="lucid-ab-a",
                                           elem_classes=[ZOOM_CLASS, FILL_CLASS])
                c["ab_image_b"] = gr.Image(label="B: final views (click to enlarge)", type="numpy", interactive=False,
                                           height=AB_IMAGE_HEIGHT_PX, elem_id="lucid-ab-b",
                                           elem_classes=[ZOOM_CLASS, FILL_CLASS])
            c["ab_table"] = gr.Dataframe(label="A and B", interactive=False, elem_id="lucid-ab-table", wrap=True)
            with gr.Accordion("A and B as JSON", open=False):
                with gr.Row():
                    c["ab_metrics_a"] = gr.JSON(label="A: final metrics")
                    c["ab_metrics_b"] = gr.JSON(label="B: final metrics")

    gr.on([tab.select, c["library_refresh"].click], handlers.library_choices, inputs=c["library"],
          outputs=c["library"], api_visibility="private")
    c["library"].input(handlers.negative_of, inputs=c["library"], outputs=c["negative"], api_visibility="private")
    c["save"].click(handlers.save, inputs=[c["new_name"], c["negative"]], outputs=[c["library"], c["library_msg"]],
                    api_visibility="private")
    c["use"].click(handlers.use_in_text_to_3d, inputs=c["negative"], outputs=[text_negative, c["library_msg"]],
                   api_visibility="private")
    c["apply"].click(handlers.set_negative, inputs=[c[name] for name in PROMPT_FIELDS], outputs=c["apply_msg"],
                     api_name="set_negative", concurrency_limit=None, show_progress="hidden",
                     preprocess=False)  # raw values, checked by the handler (see layout.py)
    gr.on([tab.select, c["run_refresh"].click], app.runs_choices, outputs=c["run"], api_visibility="private")
    inspect_inputs = [c["inspect_negative"] if name == "negative" else c[name] for name in INSPECT_FIELDS]
    c["inspect"].click(handlers.inspect, inputs=inspect_inputs, outputs=[c["grid"], c["numbers"]],
                       api_name="inspect", concurrency_limit=None)
    c["ab_start"].click(ab.ab_run, inputs=[c[f"ab_{name}"] for name in AB_FIELDS],
                        outputs=[c[f"ab_{name}"] for name in AB_OUTPUTS], api_name="ab_run", concurrency_limit=None,
                        show_progress="hidden", preprocess=False)  # raw values, checked by the handler
