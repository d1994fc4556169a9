"""Event handlers of the app: form → config overrides → a job; job snapshots → component values.

No tensors and no maths here: handlers translate between Gradio values and :mod:`lucid_app.app.jobs`. Every form
field becomes a ``section.key=value`` override applied by the strict config loader, so the UI can set nothing
the CLI cannot. Jobs belong to the browser session (``gr.Request.session_hash``); the API endpoints
``/set_controls``, ``/pause``, ``/resume``, ``/toggle_pause``, ``/stop`` and ``/result`` act on the calling session's
newest job. The streamed outputs also drive the buttons: Generate shows "Queued #n" / the step while a job goes,
the Pause/Resume toggle shows the state, Stop is enabled only while a job is queued or running. A stopped run hands
back control at once: its stream ends as soon as ``model.ply`` exists while the rest of its export goes on in the
background, shown in its own row (``/skip_export`` ends it after ``model.ply``). Runs a server restart interrupted
are listed for their owner and continue from their checkpoint (``/resume_run``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from lucid_app.app.client_config import check_client_config
from lucid_app.app.interrupted import interrupted_runs, is_interrupted
from lucid_app.app.job_board import JobView
from lucid_app.app.jobs import JobManager
from lucid_app.app.run_folders import JobError, list_runs, resolve_run
from lucid_app.config import MAX_STEPS, RENDER_SIZE_RANGE_PX, ConfigError, TrainConfig, to_yaml
from lucid_app.config.presets import list_presets, load_config
from lucid_app.io.run_layout import run_files
from lucid_app.train.prepare import DEMO_MODEL, check_model, resolve_config
from lucid_app.ui.errors import public_text, user_errors
from lucid_app.ui.form import (
    APP_EXPORTS_MESH,
    DEFAULT_PRESET,
    FORM_FIELDS,
    PRESET_FIELDS,
    example_prompts,
    form_number,
    form_overrides,
    form_values,
)
from lucid_app.ui.job_display import (
    LOSS_AXIS,
    SPLAT_AFTER_MESH_S,
    button_states,
    export_row_html,
    handed_back,
    mesh_before_splat,
    plot_frames,
    status_html,
    symlog,
)

logger = logging.getLogger(__name__)

STREAM_INTERVAL_S = 0.3
# The form's limits are the schema's; this name stays for callers that read the form's resolution range here.
RESOLUTION_RANGE_PX = RENDER_SIZE_RANGE_PX

# Order of ``generate``'s outputs (the layout creates these components).
GENERATE_OUTPUTS = ("job", "banner", "status", "preview", "loss_plot", "schedule_plot", "config", "model3d",
                    "mesh3d", "video", "dl_ply", "dl_video", "dl_config", "dl_mesh", "generate", "pause_toggle", "stop")
RESULT_OUTPUTS = ("model3d", "mesh3d", "video", "dl_ply", "dl_video", "dl_config", "dl_mesh")
_DOWNLOADS = (("dl_ply", "ply"), ("dl_video", "video"), ("dl_config", "config"), ("dl_mesh", "mesh"))


# ---------------------------------------------------------------------------------------------- pure helpers


def job_summary(view: JobView | None, outputs: Path) -> dict[str, Any]:
    """The machine-readable state of a job (the ``job`` JSON output); paths relative to the outputs root."""
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
        "preview_step": view.preview_step, "notice": view.notice,
        "run": relative_to_outputs(view.run_dir, outputs), "files": sorted(view.files),
    }


def relative_to_outputs(path: Path, root: Path) -> str:
    """``path`` relative to the outputs ``root`` as a POSIX string ("" when it lies outside)."""
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return ""


# ---------------------------------------------------------------------------------------------- handlers


class AppHandlers:
    """The app's event handlers over one :class:`JobManager` (the only state they share).

    Args:
        jobs: the job manager (tests pass a fake with the same methods).
        stream_interval_s: least time between two streamed updates of ``generate``.
        shared_runs: every visitor lists and opens every run (a single-user desktop); by default each session
            (each signed-in user, with ``app.py --auth``) sees only its own runs.
        smpl_dir: the server's SMPL folder (``app.py --smpl-dir``; "" = none), the only one a job may use.
    """

    def __init__(self, jobs: JobManager, stream_interval_s: float = STREAM_INTERVAL_S, shared_runs: bool = False,
                 smpl_dir: str = ""):
        self.jobs = jobs
        self.outputs = Path(jobs.outputs).resolve()
        self.stream_interval_s = stream_interval_s
        self.shared_runs = shared_runs
        self.smpl_dir = smpl_dir

    def owner(self, request: gr.Request | None) -> str | None:
        """Whose runs ``request`` may list and open: its session's, or everyone's (None) with ``shared_runs``."""
        return None if self.shared_runs else session_of(request)

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
        """
        view = self.jobs.submit(config, session=session_of(request), allow_demo=True)
        yield from self._stream(view, generate_label)

    def _stream(self, view: JobView, generate_label: str) -> Iterator[tuple[Any, ...]]:
        """Stream a job's snapshots (``GENERATE_OUTPUTS``) until it ends or, stopped, is handed back."""
        yield self.render_job(view, results=True, generate_label=generate_label)
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
                                  generate_label=generate_label, splat=False)
            sent_preview, sent_files = view.preview_step, dict(view.files)
        # A stopped run handed back before its mesh exists: the viewers wait for the background export to end
        # (export_row shows its mesh, then its splat), since the mesh viewer stays blank after the splat viewer.
        yield from self._final_updates(self.render_job(view, preview=view.preview_step != sent_preview, results=True,
                                                       generate_label=generate_label, splat=not handed_back(view)))

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
        """The form's config through the strict loader; user errors become ``gr.Error`` with the reason."""
        prompt = str(form.get("prompt") or "").strip()
        if not prompt:
            raise gr.Error("The prompt is empty: describe the object to generate.")
        model = str(form.get("model") or "").strip()
        preset = str(form.get("preset") or "").strip()
        try:
            if preset and preset not in list_presets():
                # A path would make the server read any YAML file it can see.
                raise ConfigError(f"unknown preset {preset[:60]!r}; available presets: {', '.join(list_presets())}")
            check_model(model)
            config = resolve_config(preset or None, prompt, form.get("negative") or "", model or None,
                                    form_overrides(form))
            check_client_config(config, self.outputs, self.smpl_dir)
            return config
        except ConfigError as err:
            raise gr.Error(str(err)) from None

    def render_job(self, view: JobView, preview: bool = True, results: bool = False,
                   generate_label: str = "Generate", splat: bool = True) -> tuple[Any, ...]:
        """``generate``'s outputs for a snapshot; unchanged previews and unfinished results are skipped."""
        loss, schedule = plot_frames(view)
        if loss.empty:
            # Gradio 6.31's LinePlot never draws lines when its first streamed value has no rows.
            loss = schedule = gr.skip()
        image = view.preview if preview else gr.skip()
        out: dict[str, Any] = {
            "job": job_summary(view, self.outputs), "banner": _banner(view), "status": status_html(view),
            "preview": image, "loss_plot": loss, "schedule_plot": schedule, "config": view.config_yaml,
        }
        out.update(self._results(view.files) if results else dict.fromkeys(RESULT_OUTPUTS, gr.skip()))
        if not splat:
            # During the export the splat viewer waits for the mesh (see _final_updates).
            out["model3d"] = gr.skip()
        out.update(button_states(view, generate_label))
        return tuple(out[name] for name in GENERATE_OUTPUTS)

    # ------------------------------------------------------------------ live controls

    @user_errors
    def set_controls(self, guidance_scale: float, delta_t: float, request: gr.Request) -> str:
        """Change the guidance scale and δ_T of this session's job; they act from its next step."""
        view = self.jobs.latest(session_of(request))
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
        view = self.jobs.latest(session_of(request))
        paused = view is not None and view.controls.paused
        message = self.resume(request) if paused else self.pause(request)
        after = self.jobs.latest(session_of(request))
        return message, button_states(after)["pause_toggle"] if after is not None else gr.skip()

    @user_errors
    def stop(self, request: gr.Request) -> str:
        view = self.jobs.latest(session_of(request))
        if view is not None and view.state == "queued":
            return self._act(request, "cancel",
                             "Cancelled: the job left the queue before it started; nothing to export.")
        if view is not None and view.state == "exporting":
            return "The run has already stopped; its export goes on in the background (Skip export ends it)."
        return self._act(request, "cancel", "Stopping after the current step; what exists is exported.")

    @user_errors
    def skip_export(self, request: gr.Request) -> str:
        """End the export of this session's run exporting in the background (or of its newest run) after
        ``model.ply`` and the checkpoint."""
        session = session_of(request)
        view = self.jobs.background_export(session)
        if view is None or view.finished:
            view = self.jobs.latest(session)
        if view is None or view.finished:
            return "No export to skip."
        self.jobs.skip_export(view.id)
        return "Export skipped: model.ply and the checkpoint are kept."

    def export_row(self, shown: dict[str, Any] | None, request: gr.Request) -> tuple[Any, ...]:
        """The background export row of this session (called every second): its text, the Skip export button, and,
        once the export has ended while the run is still the session's newest, its results (``RESULT_OUTPUTS``):
        the mesh and downloads first, the splat :data:`SPLAT_AFTER_MESH_S` later (:func:`mesh_before_splat`).

        ``shown`` is the page's record of what it showed ({"job", "splat_at"}); the new record is the last output.
        """
        session = session_of(request)
        view = self.jobs.background_export(session)
        exporting = view is not None and not view.finished
        results: dict[str, Any] = dict.fromkeys(RESULT_OUTPUTS, gr.skip())
        latest = self.jobs.latest(session)
        if view is not None and view.finished and latest is not None and latest.id == view.id:
            if shown is None or shown.get("job") != view.id:
                results = self._results(view.files)
                results["model3d"] = gr.skip()
                shown = {"job": view.id, "splat_at": time.monotonic() + SPLAT_AFTER_MESH_S}
            elif shown.get("splat_at") is not None and time.monotonic() >= shown["splat_at"]:
                results["model3d"] = self._results(view.files)["model3d"]
                shown = {"job": view.id, "splat_at": None}
        return (export_row_html(view), gr.Button(visible=exporting), *(results[name] for name in RESULT_OUTPUTS),
                shown)

    def _act(self, request: gr.Request, action: str, done: str) -> str:
        view = self.jobs.latest(session_of(request))
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
        """Files of a run: ``run`` names a past run folder (as listed), or "" for this session's newest job.

        Returns (ply, video, config, mesh, summary); a missing file is None.
        """
        if run:
            try:
                run_dir = resolve_run(self.outputs, run, self.owner(request))
            except JobError as err:
                raise gr.Error(str(err)) from None
            files, summary = run_files(run_dir), {"run": relative_to_outputs(run_dir, self.outputs)}
        else:
            view = self.jobs.latest(session_of(request))
            if view is None:
                raise gr.Error("This session has no job yet.")
            files, summary = view.files, job_summary(view, self.outputs)
        files = self._served(files)
        return files.get("ply"), files.get("video"), files.get("config"), files.get("mesh"), summary

    @user_errors
    def runs_choices(self, request: gr.Request) -> Any:
        """The past-runs dropdown of this session's runs (every run with ``shared_runs``), newest first."""
        choices = [(f"{r.name} — {r.prompt}" if r.prompt else r.name, r.name)
                   for r in list_runs(self.outputs, owner=self.owner(request))]
        return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    @user_errors
    def open_run(self, run: str, request: gr.Request) -> tuple[Any, ...]:
        """Show a past run: its results, downloads and config (outputs ``RESULT_OUTPUTS`` + config + banner).

        The layout shows the splat (``model3d``) in a second event, after the mesh (see :func:`mesh_before_splat`)."""
        if not run:
            raise gr.Error("Pick a run from the list first.")
        try:
            run_dir = resolve_run(self.outputs, run, self.owner(request))
        except JobError as err:
            raise gr.Error(str(err)) from None
        files = run_files(run_dir)
        results = self._results(files)
        config = Path(files["config"]).read_text(encoding="utf-8")
        missing = "" if "ply" in files else " (it has no model.ply yet: still running, or it failed early)"
        banner = f"Showing the past run `{relative_to_outputs(run_dir, self.outputs)}`{missing}."
        return (*(results[name] for name in RESULT_OUTPUTS), config, banner)

    @user_errors
    def interrupted_choices(self, request: gr.Request) -> Any:
        """The dropdown of this session's interrupted runs (its own only, even with ``shared_runs``: resuming is
        control)."""
        runs = interrupted_runs(self.outputs, session_of(request), active=self.jobs.active_run_dirs())
        choices = [(f"{r.name} — {r.prompt}" if r.prompt else r.name, r.name) for r in runs]
        return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    @user_errors
    def resume_run(self, run: str, request: gr.Request) -> Iterator[tuple[Any, ...]]:
        """Continue this session's interrupted run ``run`` (as listed) from its checkpoint, streamed as
        ``generate``."""
        if not run:
            raise gr.Error("Pick an interrupted run from the list first.")
        session = session_of(request)
        try:
            run_dir = resolve_run(self.outputs, run, session)
        except JobError as err:
            raise gr.Error(str(err)) from None
        if not is_interrupted(run_dir):
            raise gr.Error(f"{run!r} is not an interrupted run: it ended, or it has no checkpoint to continue from")
        yield from self._stream(self.jobs.resume_run(run_dir, session), "Generate")

    def splat_after_mesh(self, splat: str | None) -> Any:
        """The splat viewer's file, shown :data:`SPLAT_AFTER_MESH_S` after the mesh (see :func:`mesh_before_splat`)."""
        if splat:
            time.sleep(SPLAT_AFTER_MESH_S)
        return splat

    def _results(self, files: dict[str, str]) -> dict[str, Any]:
        files = self._served(files)
        # The splat viewer shows the framed copy (splat_view.py) when the run has one; downloads give model.ply.
        out: dict[str, Any] = {"model3d": files.get("view_ply", files.get("ply")), "mesh3d": files.get("mesh"),
                               "video": files.get("video")}
        for name, key in _DOWNLOADS:
            out[name] = gr.DownloadButton(value=files.get(key), visible=key in files)
        return out

    def _served(self, files: dict[str, str]) -> dict[str, str]:
        """Only files inside the outputs root are ever handed to Gradio."""
        return {k: v for k, v in files.items() if Path(v).resolve().is_relative_to(self.outputs)
                and Path(v).is_file()}

    # ------------------------------------------------------------------ form helpers and session end

    @user_errors
    def preset_changed(self, preset: str, prompt: str) -> tuple[Any, ...]:
        """Fill the form with the preset's values (``PRESET_FIELDS``, then the prompt when it is empty)."""
        try:
            values = form_values(load_config(preset or None))
        except ConfigError as err:
            raise gr.Error(str(err)) from None
        new_prompt = prompt if prompt.strip() else values["prompt"]
        return (*(values[name] for name in PRESET_FIELDS), new_prompt)

    def config_preview(self, preset: str) -> str:
        """The preset's resolved config as YAML (shown read-only before a run)."""
        try:
            return to_yaml(load_config(preset or None))
        except ConfigError as err:
            return f"# {err}"

    def unload(self, request: gr.Request) -> None:
        """The browser session ended: cancel its queued job and stop its running one.

        A signed-in user's jobs (``app.py --auth``) outlive a closed page: the same user can come back to them.
        """
        if getattr(request, "username", None):
            return
        self.jobs.cancel_session(session_of(request))


def session_of(request: gr.Request | None) -> str:
    """Who a request acts for: the signed-in user's name (``app.py --auth``), else the browser session id ("" without
    one, e.g. direct calls in tests). Jobs, controls and run folders belong to it."""
    username = getattr(request, "username", None)
    if username:
        # Hashed: a folder name of its own for every user name, whatever characters it holds.
        return "user-" + hashlib.sha256(str(username).encode()).hexdigest()[:16]
    return str(getattr(request, "session_hash", "") or "")


def _banner(view: JobView) -> str:
    if view.notice:
        return f"**Offline demo.** {view.notice}"
    if view.state == "failed":
        return f"**The run failed.** {public_text(view.message)}"
    return ""


__all__ = [
    "LOSS_AXIS", "SPLAT_AFTER_MESH_S", "button_states", "export_row_html", "handed_back", "mesh_before_splat",
    "plot_frames", "symlog",
    "APP_EXPORTS_MESH", "AppHandlers", "DEFAULT_PRESET", "DEMO_MODEL", "FORM_FIELDS", "GENERATE_OUTPUTS", "MAX_STEPS",
    "PRESET_FIELDS", "RESOLUTION_RANGE_PX", "RESULT_OUTPUTS", "check_model", "example_prompts", "form_number",
    "form_overrides", "form_values", "status_html",
]
