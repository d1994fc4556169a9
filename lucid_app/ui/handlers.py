"""Event handlers of the app: form → config overrides → a job; job snapshots → component values.

No tensors and no maths here: handlers translate between Gradio values and :mod:`lucid_app.jobs`. Every form
field becomes a ``section.key=value`` override applied by the strict config loader, so the UI can set nothing
the CLI cannot. Jobs belong to the browser session (``gr.Request.session_hash``); the API endpoints
``/set_controls``, ``/pause``, ``/resume``, ``/toggle_pause``, ``/stop`` and ``/result`` act on the calling session's
newest job. The streamed outputs also drive the buttons: Generate shows "Queued #n" / the step while a job goes,
the Pause/Resume toggle shows the state, Stop is enabled only while a job is queued or running.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from lucid_app.config import ConfigError, TrainConfig, to_yaml
from lucid_app.jobs import JobManager, JobView
from lucid_app.presets import list_presets, load_config
from lucid_app.priors.multiview import MODEL_PREFIX
from lucid_app.run_folders import JobError, list_runs, resolve_run, run_files
from lucid_app.runs import resolve_config, resolve_model_id
from lucid_app.trust import check_client_config, is_pickle_file
from lucid_app.ui.errors import public_text, user_errors
from lucid_app.ui.job_display import (
    LOSS_AXIS,
    SPLAT_AFTER_MESH_S,
    button_states,
    mesh_before_splat,
    plot_frames,
    status_html,
    symlog,
)

logger = logging.getLogger(__name__)

DEMO_MODEL = "multiview:assets/demo"
DEFAULT_PRESET = "demo"
MAX_STEPS = 20_000
RESOLUTION_RANGE_PX = (16, 1024)
STREAM_INTERVAL_S = 0.3
DEMO_PROMPTS = ("a red toy car", "a potted flower", "a snowman")

# Form fields, in the order of ``generate``'s parameters (the layout builds one component per field), and the
# config keys each one overrides. Ranges are (min, max) pairs of two fields.
FORM_FIELDS = (
    "prompt", "negative", "preset", "model", "method", "steps", "seed", "init_shape", "perp_neg", "export_mesh",
    "guidance_scale", "delta_t", "preview_every", "resolution", "batch_size", "radius_min", "radius_max",
    "polar_min_deg", "polar_max_deg", "fovy_min_rad", "fovy_max_rad", "delta_t_start", "xs_delta_t",
    "xs_inv_steps", "lambda_guidance", "extra_overrides",
)
SCALAR_KEYS = {
    "method": ("guidance.method",),
    "steps": ("optim.steps",),
    "seed": ("seed",),
    "init_shape": ("init.shape",),
    "perp_neg": ("guidance.perp_neg",),
    "export_mesh": ("export.mesh",),
    "guidance_scale": ("guidance.guidance_scale",),
    "delta_t": ("guidance.delta_t",),
    "preview_every": ("export.preview_every",),
    "resolution": ("render.width", "render.height"),
    "batch_size": ("cameras.batch_size",),
    "delta_t_start": ("guidance.delta_t_start",),
    "xs_delta_t": ("guidance.xs_delta_t",),
    "xs_inv_steps": ("guidance.xs_inv_steps",),
    "lambda_guidance": ("guidance.lambda_guidance",),
}
INT_FIELDS = frozenset({"steps", "seed", "delta_t", "preview_every", "resolution", "batch_size", "delta_t_start",
                        "xs_delta_t", "xs_inv_steps"})
# The start of each camera range (ranges widen from there towards the preset's limits, see cameras.py).
RANGE_KEYS = {
    "cameras.radius_range": ("radius_min", "radius_max"),
    "cameras.polar_range_deg": ("polar_min_deg", "polar_max_deg"),
    "cameras.fovy_range_rad": ("fovy_min_rad", "fovy_max_rad"),
}
# Fields a preset fills in when it is picked (prompt only when empty; negative prompt and model stay).
# The mesh checkbox is the app's own choice, not the preset's: the app exports a mesh by default (issue 9).
PRESET_FIELDS = tuple(f for f in FORM_FIELDS if f not in ("prompt", "negative", "preset", "model",
                                                          "extra_overrides", "export_mesh"))
APP_EXPORTS_MESH = True

# Order of ``generate``'s outputs (the layout creates these components).
GENERATE_OUTPUTS = ("job", "banner", "status", "preview", "loss_plot", "schedule_plot", "config", "model3d",
                    "mesh3d", "video", "dl_ply", "dl_video", "dl_config", "dl_mesh", "generate", "pause_toggle", "stop")
RESULT_OUTPUTS = ("model3d", "mesh3d", "video", "dl_ply", "dl_video", "dl_config", "dl_mesh")
_DOWNLOADS = (("dl_ply", "ply"), ("dl_video", "video"), ("dl_config", "config"), ("dl_mesh", "mesh"))
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


# ---------------------------------------------------------------------------------------------- pure helpers


def form_values(config: TrainConfig) -> dict[str, Any]:
    """The form fields' values for ``config`` (what the UI shows after a preset is picked)."""
    values: dict[str, Any] = {
        "prompt": config.prompt.text, "negative": config.prompt.negative, "method": config.guidance.method,
        "steps": config.optim.steps, "seed": config.seed, "init_shape": config.init.shape,
        "perp_neg": config.guidance.perp_neg, "export_mesh": config.export.mesh,
        "guidance_scale": config.guidance.guidance_scale,
        "delta_t": config.guidance.delta_t, "preview_every": config.export.preview_every,
        "resolution": config.render.width, "batch_size": config.cameras.batch_size,
        "delta_t_start": config.guidance.delta_t_start, "xs_delta_t": config.guidance.xs_delta_t,
        "xs_inv_steps": config.guidance.xs_inv_steps, "lambda_guidance": config.guidance.lambda_guidance,
    }
    for key, (lo, hi) in RANGE_KEYS.items():
        section, name = key.split(".")
        values[lo], values[hi] = getattr(getattr(config, section), name)
    return values


def form_overrides(form: dict[str, Any]) -> list[str]:
    """``section.key=value`` overrides for every form field that has a value, then the free-form extra lines.

    Raises:
        ConfigError: a value out of range, or an extra line that is not ``section.key=value``.
    """
    steps = form.get("steps")
    if steps is not None and not 1 <= form_number("steps", steps, integer=True) <= MAX_STEPS:
        raise ConfigError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    resolution = form.get("resolution")
    lo_px, hi_px = RESOLUTION_RANGE_PX
    if resolution is not None and not lo_px <= form_number("resolution", resolution, integer=True) <= hi_px:
        raise ConfigError(f"resolution must be between {lo_px} and {hi_px} px, got {resolution}")
    overrides = []
    for name, keys in SCALAR_KEYS.items():
        value = form.get(name)
        if value is None or value == "":
            continue
        if name in INT_FIELDS:
            value = form_number(name, value, integer=True)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = form_number(name, value)
        text = _yaml_value(value)
        overrides.extend(f"{key}={text}" for key in keys)
    for key, (lo, hi) in RANGE_KEYS.items():
        if form.get(lo) is None or form.get(hi) is None:
            continue
        low, high = form_number(lo, form[lo]), form_number(hi, form[hi])
        if low > high:
            raise ConfigError(f"{key}: the minimum {low} is above the maximum {high}")
        overrides.append(f"{key}=[{low}, {high}]")
    for line in str(form.get("extra_overrides") or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ConfigError(f"extra override {line!r} must look like section.key=value")
        overrides.append(line)
    return overrides


def form_number(name: str, value: Any, integer: bool = False) -> float | int:
    """A form field's number, checked: finite (JSON clients can send NaN), and whole when ``integer``.

    Raises:
        ConfigError: not a number, not finite, or not a whole number where one is needed (naming the field).
    """
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name}: expected a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}: expected a finite number, got {value}")
    if not integer:
        return number
    if number != int(number):
        raise ConfigError(f"{name}: expected a whole number, got {value}")
    return int(number)


def check_model(model: str) -> None:
    """Accept "" (the preset's model), ``multiview:DIR`` with an existing DIR, an existing local path or a hub id.

    Raises:
        ConfigError: anything else, naming what is accepted.
    """
    if not model:
        return
    if is_pickle_file(model):
        raise ConfigError(
            f"model {Path(model).name!r} is a pickle-format checkpoint, which can run code when loaded; the app "
            "loads hub ids, diffusers folders and .safetensors files only"
        )
    if model.startswith(MODEL_PREFIX):
        if not Path(resolve_model_id(model)[len(MODEL_PREFIX):]).exists():
            raise ConfigError(f"model {model!r}: no such multi-view dataset folder")
        return
    if Path(model).expanduser().exists() or _HUB_ID.fullmatch(model):
        return
    raise ConfigError(
        f"unknown model {model!r}: give a Hugging Face hub id (owner/name), a local diffusers folder or "
        f".safetensors file, or pick the offline demo ({DEMO_MODEL})"
    )


def example_prompts() -> list[list[str]]:
    """[prompt, preset] pairs: the demo objects, then every preset that names a prompt."""
    examples = [[prompt, DEFAULT_PRESET] for prompt in DEMO_PROMPTS]
    for name in list_presets():
        try:
            text = load_config(name).prompt.text
        except ConfigError:
            continue
        if text and name != DEFAULT_PRESET:
            examples.append([text, name])
    return examples


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


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value)


# ---------------------------------------------------------------------------------------------- handlers


class AppHandlers:
    """The app's event handlers over one :class:`JobManager` (the only state they share).

    Args:
        jobs: the job manager (tests pass a fake with the same methods).
        default_model: the model field's default ("" = the preset's model).
        stream_interval_s: least time between two streamed updates of ``generate``.
        shared_runs: every visitor lists and opens every run (a single-user desktop); by default each session
            (each signed-in user, with ``app.py --auth``) sees only its own runs.
        smpl_dir: the server's SMPL folder (``app.py --smpl-dir``; "" = none), the only one a job may use.
    """

    def __init__(self, jobs: JobManager, default_model: str = "", stream_interval_s: float = STREAM_INTERVAL_S,
                 shared_runs: bool = False, smpl_dir: str = ""):
        self.jobs = jobs
        self.outputs = Path(jobs.outputs).resolve()
        self.default_model = default_model
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
        """Queue a text-to-3D job for this session and stream its progress until it ends."""
        form = {name: value for name, value in locals().items() if name in FORM_FIELDS}
        yield from self.stream_job(self.resolve_form(form), request)

    def stream_job(self, config: TrainConfig, request: gr.Request,
                   generate_label: str = "Generate") -> Iterator[tuple[Any, ...]]:
        """Queue ``config`` for this session and stream its snapshots (``GENERATE_OUTPUTS``) until it ends.

        Results (viewers, downloads) are sent whenever the run's files change, so the splat viewer shows
        ``model.ply`` while the turntable and the mesh are still being exported, and the mesh as soon as it exists.
        """
        view = self.jobs.submit(config, session=session_of(request), allow_demo=True)
        yield self.render_job(view, results=True, generate_label=generate_label)
        sent_preview = view.preview_step
        sent_files = dict(view.files)
        version = view.version
        while not view.finished:
            time.sleep(self.stream_interval_s)
            view = self.jobs.wait(view.id, version, timeout_s=1.0)
            if view.version == version:
                continue
            version = view.version
            if view.finished:
                break
            yield self.render_job(view, preview=view.preview_step != sent_preview, results=view.files != sent_files,
                                  generate_label=generate_label, splat=False)
            sent_preview, sent_files = view.preview_step, dict(view.files)
        yield from self._final_updates(self.render_job(view, preview=view.preview_step != sent_preview, results=True,
                                                       generate_label=generate_label))

    def _final_updates(self, outputs: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        """``outputs`` in two updates: everything but the splat viewer, then (after :data:`SPLAT_AFTER_MESH_S`)
        everything but the mesh viewer, so the last update holds the final state. Gradio 6.31's mesh viewer
        (Babylon.js) stays blank when it loads after the splat viewer (gsplat.js) has started; loading the mesh first
        shows both."""
        yield from mesh_before_splat(outputs, GENERATE_OUTPUTS)

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
            return self._act(request, "stop", "Cancelled: the job left the queue before it started; nothing to export.")
        return self._act(request, "stop", "Stopping after the current step; what exists is exported.")

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
    "LOSS_AXIS", "SPLAT_AFTER_MESH_S", "button_states", "mesh_before_splat", "plot_frames", "symlog",
    "APP_EXPORTS_MESH", "AppHandlers", "DEFAULT_PRESET", "DEMO_MODEL", "FORM_FIELDS", "GENERATE_OUTPUTS", "PRESET_FIELDS",
    "RESULT_OUTPUTS", "check_model", "example_prompts", "form_overrides", "form_values", "status_html",
]
