"""The guidance lab's "Check this model" panel: the prior doctor (:mod:`lucid_app.lab.doctor`) on a model of the
server's list, queued on the job worker like the inspector; the table, the plot of r and the gains against t, and
the JSON. Named API endpoint ``/doctor`` (model name, preset, prompt, timesteps, methods, seeds, references → table
markdown, plot SVG, JSON text).

Will ISM (SDS, SDI) work on this model? The restoring coefficient r of each method at each t says whether a guidance
pulls a disturbed image back (r > 0) or pushes it away (r < 0); the verdict is remembered for the model, so that a
run with a method that drifts there is warned before it trains.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from lucid_app.app.client_config import public_path
from lucid_app.app.doctor_task import DoctorRequest, doctor_task
from lucid_app.app.run_folders import JobError
from lucid_app.config import ConfigError
from lucid_app.config.presets import REPO_ROOT, list_presets
from lucid_app.lab.doctor.defaults import (
    DEFAULT_SEEDS,
    DEFAULT_TIMESTEPS,
    DEFAULT_VIEWS,
    MAX_SEEDS,
    MAX_TIMESTEPS,
    METHODS,
    preset_for_kind,
)
from lucid_app.lab.doctor.measure import DoctorSettings
from lucid_app.lab.doctor.report import table_text
from lucid_app.train.prepare import resolve_config
from lucid_app.ui.errors import user_errors
from lucid_app.ui.form import DEFAULT_PRESET, form_number
from lucid_app.ui.guidance_handlers import WAIT_S, parse_int_list
from lucid_app.ui.handlers import AppHandlers, checked_preset

DOCTOR_KIND = "doctor"
# Where the clean views come from: the server's own demo dataset (never a client's folder), or the model's samples.
DEMO_DATASET = REPO_ROOT / "assets" / "demo"
REFERENCES = {"samples": "The model's own samples of the prompt", "demo_dataset": "The demo dataset's test views"}
# Order of ``DoctorHandlers.doctor``'s parameters (the panel builds one component per field).
DOCTOR_FIELDS = ("model", "preset", "prompt", "timesteps", "methods", "seeds", "references")
INTRO = (
    "Will ISM work on this model? The doctor disturbs clean images and measures whether each method's gradient pulls "
    "them back: the restoring coefficient r > 0 restores, r ≤ 0 drifts (ISM needs a denoiser whose x̂₀ gain falls "
    "with t; SDS only needs it below 1). The verdict is remembered for the model, and a run of a method that drifts "
    "there is warned before it trains."
)


def doctor_markdown(result: dict[str, Any]) -> str:
    """The doctor's table (``report.table_text``) and one verdict line per method, as Markdown."""
    verdicts = " · ".join(f"**{method.upper()}** {verdict}" for method, verdict in result["verdict"].items())
    return f"{verdicts}\n\n```\n{table_text(result)}\n```"


class DoctorHandlers:
    """The panel's handler over the app's :class:`~lucid_app.ui.handlers.AppHandlers` (jobs, models, owners)."""

    def __init__(self, app: AppHandlers) -> None:
        self.app = app

    @user_errors
    def doctor(self, model: str, preset: str, prompt: str, timesteps: str, methods: Any, seeds: float,
               references: str, request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple[str, str, str]:
        """Queue the doctor on the job worker and wait for it; returns (table Markdown, plot SVG, JSON text)."""
        try:
            doctor_request = self.doctor_request(model, preset, prompt, timesteps, methods, seeds, references)
            view = self.app.jobs.submit_task(doctor_task(doctor_request), doctor_request.config,
                                             session=self.app.owner_of(request), kind=DOCTOR_KIND)
        except (JobError, ValueError) as err:
            raise gr.Error(str(err)) from None
        while not view.finished:
            done, total = view.progress
            progress(done / total if total else 0.0, desc=f"Prior doctor — guidance evaluation {done} / {total}")
            view = self.app.jobs.wait(view.id, view.version, timeout_s=WAIT_S)
        if view.state != "done":
            raise gr.Error(f"The doctor did not finish ({view.state}): {view.message}")
        data = dict(view.data)
        svg = data.pop("svg", "")
        return doctor_markdown(data), svg, self.public_json(data)

    def doctor_request(self, model: str, preset: str, prompt: str, timesteps: str, methods: Any, seeds: float,
                       references: str) -> DoctorRequest:
        """The check the panel's fields ask for: the model by its name on the server (its kind's training preset
        unless one is picked), every value bounded.

        Raises:
            ConfigError: an unknown model, preset, method or reference choice, a bad timestep list or seed count, an
                empty prompt.
        """
        ref = self.app.models.resolve(model)
        preset = checked_preset(preset) or (DEFAULT_PRESET if ref is None else preset_for_kind(ref.kind))
        if not str(prompt or "").strip():
            raise ConfigError("Give the prompt whose images the model should be checked on.")
        config = self.app.client_config(preset, str(prompt).strip(), ref)
        ts = parse_int_list(timesteps, "t", 1)
        if len(ts) > MAX_TIMESTEPS:
            raise ConfigError(f"t: at most {MAX_TIMESTEPS} timesteps, got {len(ts)}")
        chosen = tuple(methods.split(",") if isinstance(methods, str) else methods or ())
        chosen = tuple(str(m).strip() for m in chosen if str(m).strip())
        if not chosen or any(m not in METHODS for m in chosen):
            raise ConfigError(f"methods: pick some of {', '.join(METHODS)}, got {list(chosen)[:5]}")
        n_seeds = form_number("seeds", seeds, integer=True)
        if not 1 <= n_seeds <= MAX_SEEDS:
            raise ConfigError(f"seeds: between 1 and {MAX_SEEDS}, got {seeds}")
        if references not in REFERENCES:
            raise ConfigError(f"references: pick one of {', '.join(REFERENCES)}, got {str(references)[:40]!r}")
        settings = DoctorSettings(timesteps=ts, methods=chosen, seeds=int(n_seeds))
        dataset = DEMO_DATASET if references == "demo_dataset" else None
        return DoctorRequest(config, settings, dataset, DEFAULT_VIEWS)

    def public_json(self, data: dict[str, Any]) -> str:
        """The doctor's JSON for the client: its model and dataset without server folders."""
        shown = dict(data)
        if isinstance(shown.get("model"), str):
            shown["model"] = public_path(shown["model"], self.app.outputs)
        refs = dict(shown.get("references") or {})
        if isinstance(refs.get("dataset"), str):
            refs["dataset"] = public_path(refs["dataset"], self.app.outputs)
            shown["references"] = refs
        return json.dumps(shown, indent=2)


def build_doctor_panel(app: AppHandlers) -> None:
    """The panel inside the caller's tab (an accordion), wired to ``/doctor``."""
    handlers = DoctorHandlers(app)
    c: dict[str, gr.components.Component] = {}
    with gr.Accordion("Check this model: will ISM work on it? (prior doctor)", open=False):
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    c["model"] = gr.Dropdown(app.models.choices(), value="", allow_custom_value=True,
                                             label="Model", elem_id="lucid-doctor-model")
                    c["preset"] = gr.Dropdown(["", *list_presets()], value="", label="Preset (empty: the model's own)")
                c["prompt"] = gr.Textbox(resolve_config(DEFAULT_PRESET).prompt.text, label="Prompt")
                with gr.Row():
                    c["timesteps"] = gr.Textbox(",".join(map(str, DEFAULT_TIMESTEPS)), label="t (timestep indices)")
                    c["seeds"] = gr.Number(DEFAULT_SEEDS, label="Seeds", precision=0, minimum=1, maximum=MAX_SEEDS)
                c["methods"] = gr.CheckboxGroup(list(METHODS), value=list(METHODS), label="Methods")
                c["references"] = gr.Radio([(label, key) for key, label in REFERENCES.items()], value="samples",
                                           label="Clean images")
                c["run"] = gr.Button("Check this model", variant="primary", elem_id="lucid-doctor-run")
            with gr.Column(scale=3):
                c["table"] = gr.Markdown(elem_id="lucid-doctor-table")
                c["plot"] = gr.HTML(elem_id="lucid-doctor-plot")
                c["json"] = gr.Code(language="json", label="The doctor's JSON", interactive=False)
    c["run"].click(handlers.doctor, inputs=[c[name] for name in DOCTOR_FIELDS],
                   outputs=[c["table"], c["plot"], c["json"]], api_name="doctor", concurrency_limit=None)
