"""Event handlers of the app: form → config overrides → a job; job snapshots → component values.

No tensors and no maths here: handlers translate between Gradio values and :mod:`lucid_app.app.jobs`. Every form
field becomes a ``section.key=value`` override that must pass the client allow-list
(:mod:`lucid_app.app.client_config`) and then the strict config loader, so the UI can set nothing the CLI cannot and
nothing that names a server file; the model is a name from the server's list (:mod:`lucid_app.app.model_registry`),
presets are picked by name. Jobs and run folders belong to the caller's owner id, derived on the server from the
signed-in user or the browser session (:mod:`lucid_app.app.identity`); the API endpoints ``/set_controls``,
``/pause``, ``/resume``, ``/toggle_pause``, ``/stop``, ``/skip_export`` and ``/result`` act on the caller's own newest
job, whatever ``--shared-runs`` lets it view. Files reach the client only as copies made after an owner check
(:mod:`lucid_app.ui.served_files`), and what it is shown of a config names no server folder. The streamed outputs
also drive the buttons: Generate shows "Queued #n" / the step while a job goes, the Pause/Resume toggle shows the
state, Stop is enabled only while a job is queued or running. A stopped run hands back control at once: its stream
ends as soon as ``model.ply`` exists while the rest of its export goes on in the background, shown in its own row
(``/skip_export`` ends it after ``model.ply``). Runs a server restart interrupted are listed for their owner and
continue from their checkpoint (``/resume_run``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from lucid_app.app.client_config import check_client_config, check_client_overrides, public_config_yaml
from lucid_app.app.identity import OwnerKeys
from lucid_app.app.interrupted import interrupted_runs, is_interrupted
from lucid_app.app.job_board import JobView
from lucid_app.app.jobs import JobManager
from lucid_app.app.model_registry import ModelRegistry, default_registry
from lucid_app.app.past_runs import read_run, views_image
from lucid_app.app.run_folders import JobError, list_runs, resolve_run
from lucid_app.config import MAX_STEPS, RENDER_SIZE_RANGE_PX, ConfigError, TrainConfig, from_yaml, replace, to_yaml
from lucid_app.config.presets import list_presets, load_config
from lucid_app.io.run_layout import run_files
from lucid_app.priors.model_ref import ModelRef
from lucid_app.train.events import StepEvent
from lucid_app.train.prepare import resolve_config
from lucid_app.ui.errors import public_text, user_errors
from lucid_app.ui.form import (
    APP_EXPORTS_MESH,
    DEFAULT_PRESET,
    FORM_FIELDS,
    PRESET_FIELDS,
    checked_form,
    example_prompts,
    form_number,
    form_overrides,
    form_values,
)
from lucid_app.ui.job_display import (
    LOSS_PLOTS,
    SPLAT_AFTER_MESH_S,
    button_states,
    export_row_html,
    handed_back,
    mesh_before_splat,
    plot_frames,
    record_status_html,
    status_html,
)
from lucid_app.ui.notices import setting_notices
from lucid_app.ui.panels import plot_key
from lucid_app.ui.served_files import ServedFiles, gradio_served_root

logger = logging.getLogger(__name__)

STREAM_INTERVAL_S = 0.3
# The form's limits are the schema's; this name stays for callers that read the form's resolution range here.
RESOLUTION_RANGE_PX = RENDER_SIZE_RANGE_PX

PLOT_OUTPUTS = tuple(plot_key(name) for name in (*LOSS_PLOTS, "schedule"))
# Order of ``generate``'s outputs (the layout creates these components; a tab without live sliders passes States).
# ``prompt`` and the live sliders change only when the run's own values differ from the form's (the offline demo
# stood in); ``control_msg`` is cleared when a run starts and ends.
GENERATE_OUTPUTS = ("job", "banner", "status", "preview", *PLOT_OUTPUTS, "config", "model3d", "mesh3d", "video",
                    "dl_ply", "dl_video", "dl_config", "dl_mesh", "dl_mesh_zip", "control_msg", "prompt", "gs_live",
                    "dt_live", "generate", "pause_toggle", "stop")
RESULT_OUTPUTS = ("model3d", "mesh3d", "video", "dl_ply", "dl_video", "dl_config", "dl_mesh", "dl_mesh_zip")
# Order of ``open_run``'s outputs: what a live run showed, then the config and the banner.
OPEN_OUTPUTS = ("status", "preview", *PLOT_OUTPUTS, *RESULT_OUTPUTS, "config", "banner")
# Order of ``export_row``'s outputs (every second): the background export's row and Skip export button, what a
# stopped run's stream would have ended with once its export has ended, and the page's record of what it showed.
EXPORT_ROW_OUTPUTS = ("export_row", "skip_export", "status", "preview", *RESULT_OUTPUTS, "shown_export")
_DOWNLOADS = (("dl_ply", "ply"), ("dl_video", "video"), ("dl_config", "config"), ("dl_mesh", "mesh"),
              ("dl_mesh_zip", "mesh_zip"))


# ---------------------------------------------------------------------------------------------- pure helpers


def job_summary(view: JobView | None) -> dict[str, Any]:
    """The machine-readable state of the caller's own job (the ``job`` JSON output): its run is named by the run
    folder's name alone, messages without server paths."""
    if view is None:
        return {"state": "none"}
    last = view.last_step
    return {
        "id": view.id, "state": view.state, "position": view.position, "outcome": view.outcome,
        "message": public_text(view.message), "step": last.step if last else 0,
        "total_steps": last.total_steps if last else view.total_steps,
        "n_gaussians": last.n_gaussians if last else None, "loss": last.losses.get("total") if last else None,
        "t": last.t if last else None, "delta_t": last.delta_t if last else None,
        "step_guidance_scale": last.guidance_scale if last else None,
        "guidance_scale": view.controls.guidance_scale, "delta_t_control": view.controls.delta_t,
        "preview_step": view.preview_step, "notice": public_text(view.notice or "") or None,
        "run": view.run_dir.name, "files": sorted(view.files),
    }


def checked_preset(preset: str) -> str:
    """``preset`` when it names a shipped preset ("" = the default); a path would make the server read any YAML file
    it can see.

    Raises:
        ConfigError: not a preset name (the names are listed).
    """
    preset = str(preset or "").strip()
    if preset and preset not in list_presets():
        raise ConfigError(f"unknown preset {preset[:60]!r}; available presets: {', '.join(list_presets())}")
    return preset


# ---------------------------------------------------------------------------------------------- handlers


class AppHandlers:
    """The app's event handlers over one :class:`JobManager` (the only state they share).

    Args:
        jobs: the job manager (tests pass a fake with the same methods).
        stream_interval_s: least time between two streamed updates of ``generate``.
        shared_runs: every visitor lists and opens (views) every run (a single-user desktop); by default each owner
            (each signed-in user with ``app.py --auth``, else each browser session) sees only its own runs. Controls
            act on the caller's own jobs either way.
        smpl_dir: the server's SMPL folder (``app.py --smpl-dir``; "" = none), the only one a job may use.
        models: the models clients pick by name (``app.py --models``; default: the built-in ones).
        owner_keys: derives owner ids (default: the secret in the outputs folder, created when missing).
        served: makes the copies of files a client receives (default: in Gradio's upload folder).
    """

    def __init__(self, jobs: JobManager, stream_interval_s: float = STREAM_INTERVAL_S, shared_runs: bool = False,
                 smpl_dir: str = "", models: ModelRegistry | None = None, owner_keys: OwnerKeys | None = None,
                 served: ServedFiles | None = None):
        self.jobs = jobs
        self.outputs = Path(jobs.outputs).resolve()
        self.stream_interval_s = stream_interval_s
        self.shared_runs = shared_runs
        self.smpl_dir = smpl_dir
        self.models = models or default_registry()
        self.owner_keys = owner_keys or OwnerKeys.for_outputs(self.outputs)
        self.served = served or ServedFiles(gradio_served_root())
        # Per owner: which loss plots show their raw values too, and the steps its plots show now (a live job's or
        # a reopened run's), so a toggle redraws its plot at once.
        self._raw: dict[str, dict[str, bool]] = {}
        self._shown_steps: dict[str, Sequence[StepEvent]] = {}

    def owner_of(self, request: gr.Request | None) -> str:
        """The owner id of a request: of the signed-in user (``app.py --auth``), else of the browser session (of ""
        without one, e.g. direct calls in tests). Jobs, controls, run folders and negatives belong to it."""
        username = getattr(request, "username", None)
        if username:
            return self.owner_keys.owner(user=str(username))
        return self.owner_keys.owner(session=str(getattr(request, "session_hash", "") or ""))

    # ------------------------------------------------------------------ text-to-3D

    @user_errors
    def generate(
        self,
        prompt: str,
        negative: str,
        preset: str,
        model: str,
        method: str,
        steps: float,
        seed: float,
        init_shape: str,
        perp_neg: bool,
        export_mesh: bool,
        guidance_scale: float,
        delta_t: float,
        preview_every: float,
        resolution: float,
        batch_size: float,
        radius_min: float,
        radius_max: float,
        polar_min_deg: float,
        polar_max_deg: float,
        fovy_min_rad: float,
        fovy_max_rad: float,
        delta_t_start: float,
        xs_delta_t: float,
        xs_inv_steps: float,
        lambda_guidance: float,
        extra_overrides: str,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        """Queue a text-to-3D job for this session and stream its progress until it ends.

        The parameters are the form's fields (``form.FIELDS``), spelled out because they name the ``/generate`` API's
        parameters; a test checks that they match the table.
        """
        form = {name: value for name, value in locals().items() if name in FORM_FIELDS}
        yield from self.stream_job(self.resolve_form(form), request)

    def stream_job(self, config: TrainConfig, request: gr.Request,
                   generate_label: str = "Generate") -> Iterator[tuple[Any, ...]]:
        """Queue ``config`` for this session and stream its snapshots (``GENERATE_OUTPUTS``) until it ends.

        Results (viewers, downloads) are sent whenever the run's files change, so the splat viewer shows
        ``model.ply`` while the turntable and the mesh are still being exported, and the mesh as soon as it exists.
        The prompt box and the live sliders follow the run when its values change from those it was queued with
        (the offline demo stood in with its own prompt and δ_T); at the end the preview box shows the final views.
        """
        owner = self.owner_of(request)
        yield from self._stream(self.jobs.submit(config, session=owner, allow_demo=True), owner, generate_label)

    def _stream(self, view: JobView, owner: str, generate_label: str) -> Iterator[tuple[Any, ...]]:
        """Stream ``owner``'s job's snapshots (``GENERATE_OUTPUTS``) until it ends or, stopped, is handed back
        (:func:`handed_back`: its export goes on in the background, in :meth:`export_row`)."""
        sent = {"prompt": view.prompt, "controls": _slider_values(view)}
        yield self.render_job(view, results=True, generate_label=generate_label, owner=owner, control_msg="")
        sent_preview = view.preview_step
        sent_files = dict(view.files)
        version = view.version
        while not (view.finished or handed_back(view)):
            time.sleep(self.stream_interval_s)
            view = self.jobs.wait(view.id, version, timeout_s=1.0)
            if view.version == version:
                continue
            version = view.version
            if view.finished or handed_back(view):
                break
            yield self.render_job(view, preview=view.preview_step != sent_preview, results=view.files != sent_files,
                                  generate_label=generate_label, splat=False, owner=owner, sent=sent)
            sent_preview, sent_files = view.preview_step, dict(view.files)
        # A stopped run handed back before its mesh exists: the viewers wait for the background export to end
        # (export_row shows its mesh, then its splat), since the mesh viewer stays blank after the splat viewer.
        yield from self._final_updates(self.render_job(view, preview=True, results=True, generate_label=generate_label,
                                                       splat=not handed_back(view), owner=owner, sent=sent,
                                                       control_msg=""))

    def _final_updates(self, outputs: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        """``outputs`` in two updates: everything but the splat viewer, then (after :data:`SPLAT_AFTER_MESH_S`)
        everything but the mesh viewer, so the last update holds the final state. Gradio 6.31's mesh viewer
        (Babylon.js) stays blank when it loads after the splat viewer (gsplat.js) has started; loading the mesh first
        shows both. Generate stays disabled until the last update, the one before the event ends: a click meanwhile
        would find the event still running and be dropped."""
        updates = mesh_before_splat(outputs, GENERATE_OUTPUTS)
        first = next(updates)
        busy = GENERATE_OUTPUTS.index("generate")
        yield tuple(gr.Button(value="Finishing…", interactive=False) if i == busy else value
                    for i, value in enumerate(first))
        yield from updates

    def resolve_form(self, form: dict[str, Any]) -> TrainConfig:
        """The form's config: the form's raw values checked once (the form-field table), a preset by name, the client's
        overrides through the allow-list, the model by name from the server's list, then the strict loader; user
        errors become ``gr.Error`` with the reason."""
        try:
            form = checked_form(form)
        except ConfigError as err:
            raise gr.Error(str(err)) from None
        prompt = str(form.get("prompt") or "").strip()
        if not prompt:
            raise gr.Error("The prompt is empty: describe the object to generate.")
        try:
            preset = checked_preset(form.get("preset") or "")
            ref = self.models.resolve(form.get("model") or "")
            overrides = form_overrides(form)
            check_client_overrides(overrides)
            return self.client_config(preset, prompt, ref, form.get("negative") or "", overrides)
        except ConfigError as err:
            raise gr.Error(str(err)) from None

    def client_config(self, preset: str, prompt: str, ref: ModelRef | None, negative: str | None = None,
                      overrides: Sequence[str] = ()) -> TrainConfig:
        """A client's run config: ``preset`` (a checked name; "" = the default) with ``prompt``, ``negative`` (None:
        the preset's) and ``overrides`` (already through the allow-list), on the server's model ``ref`` (None: the
        preset's own), checked against what a client may ask for (:func:`check_client_config`).

        Raises:
            ConfigError: the loader's or the client checks' one line.
        """
        config = resolve_config(preset or None, prompt, negative, None, list(overrides))
        if ref is not None:
            config = replace(config, model=ref.applied(config.model))
        check_client_config(config, self.smpl_dir)
        return config

    def render_job(self, view: JobView, preview: bool = True, results: bool = False,
                   generate_label: str = "Generate", splat: bool = True, owner: str = "",
                   sent: dict[str, Any] | None = None, control_msg: str | None = None) -> tuple[Any, ...]:
        """``generate``'s outputs for a snapshot of ``owner``'s job; unchanged previews and unfinished results are
        skipped.

        ``owner``: whose plot settings apply (and whose shown steps this becomes) and whom result files are served to;
        ``sent``: the prompt and slider values the page shows, updated here when the run's differ; ``control_msg``: a
        new line under the controls (None keeps it). A finished run's preview is its final views (``views/``, at the
        export's size)."""
        self._shown_steps[owner] = view.steps
        plots = self._plots(view.steps, owner)
        image: Any = gr.skip()
        if preview:
            final = views_image(read_run(view.run_dir).views) if view.finished else None
            image = final if final is not None else view.preview
        out: dict[str, Any] = {
            "job": job_summary(view), "banner": _banner(view), "status": status_html(view),
            "preview": image, **plots, "config": self.public_yaml(view.config_yaml),
            "control_msg": gr.skip() if control_msg is None else control_msg,
            "prompt": gr.skip(), "gs_live": gr.skip(), "dt_live": gr.skip(),
        }
        if sent is not None:
            if view.prompt != sent["prompt"]:
                out["prompt"] = sent["prompt"] = view.prompt
            sliders = _slider_values(view)
            if sliders != sent["controls"]:
                out["gs_live"], out["dt_live"] = sent["controls"] = sliders
        out.update(self._results(view.files, owner) if results else dict.fromkeys(RESULT_OUTPUTS, gr.skip()))
        if not splat:
            # During the export the splat viewer waits for the mesh (see _final_updates).
            out["model3d"] = gr.skip()
        out.update(button_states(view, generate_label))
        return tuple(out[name] for name in GENERATE_OUTPUTS)

    def public_yaml(self, config_yaml: str) -> str:
        """A config's YAML as a client may see it (no server folders), cached per text."""
        return _public_yaml(config_yaml, self.outputs)

    def _plots(self, steps: Sequence[StepEvent], owner: str) -> dict[str, Any]:
        """The plots' values (``PLOT_OUTPUTS``) for ``steps`` with the owner's raw-value toggles; skipped while
        empty (Gradio 6.31's LinePlot never draws lines when its first streamed value has no rows)."""
        frames = plot_frames(steps, self._raw.get(owner, {}))
        return {plot_key(name): gr.skip() if frame.empty else frame for name, frame in frames.items()}

    @user_errors
    def show_raw(self, name: str, raw: bool, request: gr.Request) -> Any:
        """Toggle the raw values of loss plot ``name`` (a :data:`LOSS_PLOTS` key) for this owner; returns the plot
        redrawn from what it shows now."""
        if name not in LOSS_PLOTS:
            raise gr.Error(f"unknown plot {str(name)[:40]!r}; valid: {', '.join(LOSS_PLOTS)}")
        owner = self.owner_of(request)
        self._raw.setdefault(owner, {})[name] = bool(raw)
        return self._plots(self._shown_steps.get(owner, ()), owner)[plot_key(name)]

    # ------------------------------------------------------------------ live controls

    @user_errors
    def set_controls(self, guidance_scale: float, delta_t: float, request: gr.Request) -> str:
        """Change the guidance scale and δ_T of this session's job; they act from its next step."""
        view = self.jobs.latest(self.owner_of(request))
        if view is None or view.finished:
            return "No running job to control."
        try:
            state = self.jobs.set_controls(view.id, guidance_scale=form_number("guidance scale", guidance_scale),
                                           delta_t=form_number("δ_T", delta_t, integer=True))
        except (JobError, ValueError) as err:
            return public_text(str(err))
        return f"From the next step: guidance scale {state.guidance_scale:g}, δ_T {state.delta_t}."

    @user_errors
    def pause(self, request: gr.Request) -> str:
        return self._act(request, "pause", "Paused: the job waits before its next step.")

    @user_errors
    def resume(self, request: gr.Request) -> str:
        return self._act(request, "resume", "Resumed.")

    @user_errors
    def toggle_pause(self, request: gr.Request) -> tuple[str, Any]:
        """Pause this session's running job, or resume it when it is paused; returns (message, the toggle)."""
        view = self.jobs.latest(self.owner_of(request))
        paused = view is not None and view.controls.paused
        message = self.resume(request) if paused else self.pause(request)
        after = self.jobs.latest(self.owner_of(request))
        return message, button_states(after)["pause_toggle"] if after is not None else gr.skip()

    @user_errors
    def stop(self, request: gr.Request) -> str:
        view = self.jobs.latest(self.owner_of(request))
        if view is not None and view.state == "queued":
            return self._act(request, "cancel",
                             "Cancelled: the job left the queue before it started; nothing to export.")
        if view is not None and view.state == "exporting":
            return "The run has already stopped; its export goes on in the background (Skip export ends it)."
        return self._act(request, "cancel", "Stopping after the current step; what exists is exported.")

    @user_errors
    def skip_export(self, request: gr.Request) -> str:
        """End the export of the caller's run exporting in the background (or of its newest run) after
        ``model.ply`` and the checkpoint."""
        owner = self.owner_of(request)
        view = self.jobs.background_export(owner)
        if view is None or view.finished:
            view = self.jobs.latest(owner)
        if view is None or view.finished:
            return "No export to skip."
        self.jobs.skip_export(view.id)
        return "Export skipped: model.ply and the checkpoint are kept."

    def export_row(self, shown: dict[str, Any] | None, request: gr.Request) -> tuple[Any, ...]:
        """The caller's background export row (called every second; ``EXPORT_ROW_OUTPUTS``): its text, the Skip
        export button, and, once the export has ended while the run is still the caller's newest, what its stream
        would have ended with: its status, its final views in the preview box and its results (``RESULT_OUTPUTS``),
        the mesh and downloads first, the splat :data:`SPLAT_AFTER_MESH_S` later (:func:`mesh_before_splat`).

        ``shown`` is the page's record of what it showed ({"job", "splat_at"}); the new record is the last output.
        """
        owner = self.owner_of(request)
        view = self.jobs.background_export(owner)
        exporting = view is not None and not view.finished
        out: dict[str, Any] = dict.fromkeys(("status", "preview", *RESULT_OUTPUTS), gr.skip())
        latest = self.jobs.latest(owner)
        if view is not None and view.finished and latest is not None and latest.id == view.id:
            if shown is None or shown.get("job") != view.id:
                out.update(self._results(view.files, owner), model3d=gr.skip(), status=status_html(view))
                final = views_image(read_run(view.run_dir).views)
                if final is not None:
                    out["preview"] = final
                shown = {"job": view.id, "splat_at": time.monotonic() + SPLAT_AFTER_MESH_S}
            elif shown.get("splat_at") is not None and time.monotonic() >= shown["splat_at"]:
                out["model3d"] = self._results(view.files, owner)["model3d"]
                shown = {"job": view.id, "splat_at": None}
        out.update(export_row=export_row_html(view), skip_export=gr.Button(visible=exporting), shown_export=shown)
        return tuple(out[name] for name in EXPORT_ROW_OUTPUTS)

    def _act(self, request: gr.Request, action: str, done: str) -> str:
        view = self.jobs.latest(self.owner_of(request))
        if view is None or view.finished:
            return "No running job."
        try:
            getattr(self.jobs, action)(view.id)
        except JobError as err:
            return str(err)
        return done

    # ------------------------------------------------------------------ results and past runs

    @user_errors
    def result(self, run: str, request: gr.Request) -> tuple[Any, ...]:
        """Files of a run: ``run`` names a past run (as listed: ``RUN``, or ``OWNER/RUN`` with ``--shared-runs``), or
        "" for the caller's newest job.

        Returns (ply, video, config, mesh, summary); a missing file is None.
        """
        owner = self.owner_of(request)
        if run:
            run_dir = self.run_folder(run, request)
            files, summary = run_files(run_dir), {"run": run}
        else:
            view = self.jobs.latest(owner)
            if view is None:
                raise gr.Error("This session has no job yet.")
            files, summary = view.files, job_summary(view)
        served = self._served(files, owner)
        return served.get("ply"), served.get("video"), served.get("config"), served.get("mesh"), summary

    def run_folder(self, run: str, request: gr.Request | None) -> Path:
        """The folder of the past run ``run`` that the caller may view: its own (``RUN``), or with ``--shared-runs``
        any owner's (``OWNER/RUN``).

        Raises:
            JobError: not such a run (another owner's run gets the same line as a missing one).
        """
        return resolve_run(self.outputs, run, self.owner_of(request), shared=self.shared_runs)

    @user_errors
    def runs_choices(self, request: gr.Request) -> Any:
        """The past-runs dropdown: the caller's runs by name (with ``--shared-runs`` also other owners' runs as
        ``OWNER/RUN``), newest first."""
        runs = list_runs(self.outputs, owner=self.owner_of(request), shared=self.shared_runs)
        choices = [(f"{r.name} — {r.prompt}" if r.prompt else r.name, r.name) for r in runs]
        return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    @user_errors
    def open_run(self, run: str, request: gr.Request) -> tuple[Any, ...]:
        """Show a past run as its live run ended (``OPEN_OUTPUTS``): its status, final views, plots, viewers,
        downloads and config, and a banner naming it.

        The layout shows the splat (``model3d``) in a second event, after the mesh (see :func:`mesh_before_splat`)."""
        if not run:
            raise gr.Error("Pick a run from the list first.")
        run_dir = self.run_folder(run, request)
        files = run_files(run_dir)
        record = read_run(run_dir)
        config_text = Path(files["config"]).read_text(encoding="utf-8")
        try:
            total = from_yaml(config_text).optim.steps
        except ConfigError:
            total = record.steps[-1].step if record.steps else 0
        owner = self.owner_of(request)
        self._shown_steps[owner] = record.steps
        out: dict[str, Any] = {"status": record_status_html(record.status, record.steps, total),
                               "preview": views_image(record.views), **self._plots(record.steps, owner),
                               **self._results(files, owner), "config": self.public_yaml(config_text)}
        missing = "" if "ply" in files else " (it has no model.ply yet: still running, or it failed early)"
        out["banner"] = f"Showing the past run `{run}`{missing}."
        return tuple(out[name] for name in OPEN_OUTPUTS)

    @user_errors
    def interrupted_choices(self, request: gr.Request) -> Any:
        """The dropdown of the caller's interrupted runs (its own only, even with ``shared_runs``: resuming is
        control)."""
        runs = interrupted_runs(self.outputs, self.owner_of(request), active=self.jobs.active_run_dirs())
        choices = [(f"{r.name} — {r.prompt}" if r.prompt else r.name, r.name) for r in runs]
        return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    @user_errors
    def resume_run(self, run: str, request: gr.Request) -> Iterator[tuple[Any, ...]]:
        """Continue the caller's own interrupted run ``run`` (as listed: ``RUN``) from its checkpoint, streamed as
        ``generate``."""
        if not run:
            raise gr.Error("Pick an interrupted run from the list first.")
        owner = self.owner_of(request)
        try:
            run_dir = resolve_run(self.outputs, run, owner)
        except JobError as err:
            raise gr.Error(str(err)) from None
        if not is_interrupted(run_dir):
            raise gr.Error(f"{run!r} is not an interrupted run: it ended, or it has no checkpoint to continue from")
        yield from self._stream(self.jobs.resume_run(run_dir, owner), owner, "Generate")

    def splat_after_mesh(self, splat: str | None) -> Any:
        """The splat viewer's file, shown :data:`SPLAT_AFTER_MESH_S` after the mesh (see :func:`mesh_before_splat`)."""
        if splat:
            time.sleep(SPLAT_AFTER_MESH_S)
        return splat

    def _results(self, files: dict[str, str], owner: str) -> dict[str, Any]:
        files = self._served(files, owner)
        # The splat viewer shows the framed copy (splat_view.py) when the run has one; downloads give model.ply.
        # The mesh viewer likewise shows its unlit copy (mesh/write.py, textured: mesh/write_textured.py); the
        # downloads are mesh.glb and, textured, the .obj set zipped.
        out: dict[str, Any] = {"model3d": files.get("view_ply", files.get("ply")),
                               "mesh3d": files.get("view_mesh", files.get("mesh")) if "mesh" in files else None,
                               "video": files.get("video")}
        for name, key in _DOWNLOADS:
            out[name] = gr.DownloadButton(value=files.get(key), visible=key in files)
        return out

    def _served(self, files: dict[str, str], owner: str) -> dict[str, str]:
        """Served copies (:mod:`lucid_app.ui.served_files`) of a run's files for ``owner``, who may view the run:
        only files inside the outputs root, the config without server paths."""
        served = {}
        for key, value in files.items():
            path = Path(value)
            if not path.resolve().is_relative_to(self.outputs) or not path.is_file():
                continue
            if key == "config":
                copy = self.served.text(owner, path.name, self.public_yaml(path.read_text(encoding="utf-8")))
            else:
                copy = self.served.file(owner, path)
            if copy is not None:
                served[key] = copy
        return served

    # ------------------------------------------------------------------ form helpers and session end

    @user_errors
    def preset_changed(self, preset: str, prompt: str) -> tuple[Any, ...]:
        """Fill the form with the preset's values (``PRESET_FIELDS``, then the prompt when it is empty)."""
        try:
            values = form_values(load_config(checked_preset(preset) or None))
        except ConfigError as err:
            raise gr.Error(str(err)) from None
        new_prompt = prompt if prompt.strip() else values["prompt"]
        return (*(values[name] for name in PRESET_FIELDS), new_prompt)

    def config_preview(self, preset: str) -> str:
        """The preset's resolved config as YAML (shown read-only before a run), without server folders."""
        try:
            return self.public_yaml(to_yaml(load_config(checked_preset(preset) or None)))
        except ConfigError as err:
            return f"# {err}"

    def setting_notices(self, model: str, preset: str, negative: str, perp_neg: bool) -> tuple[str, str]:
        """The notices beside the negative prompt and Perp-Neg (:func:`lucid_app.ui.notices.setting_notices`) for
        the form's model name and preset name."""
        try:
            preset = checked_preset(preset)
        except ConfigError:
            return "", ""
        return setting_notices(model, preset, negative, perp_neg, self.models.refs())

    def unload(self, request: gr.Request) -> None:
        """The browser session ended: cancel its queued job and stop its running one.

        A signed-in user's jobs (``app.py --auth``) outlive a closed page: the same user can come back to them.
        """
        owner = self.owner_of(request)
        self._raw.pop(owner, None)
        self._shown_steps.pop(owner, None)
        if getattr(request, "username", None):
            return
        self.jobs.cancel_session(owner)


@functools.lru_cache(maxsize=64)
def _public_yaml(config_yaml: str, outputs: Path) -> str:
    return public_config_yaml(config_yaml, outputs)


def _slider_values(view: JobView) -> tuple[float, int]:
    """The live sliders' values for a job: its guidance scale and δ_T in force."""
    return view.controls.guidance_scale, int(view.controls.delta_t)


def _banner(view: JobView) -> str:
    if view.notice:
        return f"**Offline demo.** {public_text(view.notice)}"
    if view.state == "failed":
        return f"**The run failed.** {public_text(view.message)}"
    return ""


__all__ = [
    "EXPORT_ROW_OUTPUTS", "OPEN_OUTPUTS", "PLOT_OUTPUTS", "SPLAT_AFTER_MESH_S", "button_states", "export_row_html",
    "handed_back", "mesh_before_splat", "plot_frames",
    "APP_EXPORTS_MESH", "AppHandlers", "DEFAULT_PRESET", "FORM_FIELDS", "GENERATE_OUTPUTS", "MAX_STEPS",
    "PRESET_FIELDS", "RESOLUTION_RANGE_PX", "RESULT_OUTPUTS", "checked_preset", "example_prompts", "form_number",
    "form_overrides", "form_values", "status_html",
]
