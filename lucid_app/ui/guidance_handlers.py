"""Handlers of the "Negative prompts & guidance lab" tab: the negative library, live prompt changes, the inspector.

No tensors here: the inspector's work is a job task (:mod:`lucid_app.app.inspect_task`) queued on the app's worker,
and these handlers only build its request and follow its progress. The A/B run lives in ``ab_run.py``. Each owner's
own negatives are kept in their folder (``OUTPUTS/<owner>/negatives.yaml``, capped in entries and size, never served
by URL), merged with the shipped library. The inspector takes a model by name from the server's list, an uploaded
``.ply`` file (parsed by plyfile, never a folder), or one of the caller's runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from lucid_app.app.client_config import public_path
from lucid_app.app.inspect_task import CAMERA_MODES, InspectRequest, inspect_task
from lucid_app.app.job_board import JobView
from lucid_app.app.run_folders import JobError, user_negatives_path
from lucid_app.app.tasks import TaskContext
from lucid_app.config import (
    MAX_INSPECT_SEEDS,
    MAX_INSPECT_VALUES,
    MAX_TIMESTEP,
    AzimuthDeg,
    ConfigError,
    ElevationDeg,
    GuidanceConfig,
    Length,
    PromptConfig,
    TrainConfig,
    from_yaml,
)
from lucid_app.config.negatives import REFERENCE_PREFIX, library_text, merged_negatives, save_negative
from lucid_app.io.ply import read_gaussian_ply
from lucid_app.io.run_layout import CONFIG_NAME
from lucid_app.lab.inspector import NEGATIVE_VARIANTS, InspectSettings
from lucid_app.priors.model_ref import ModelRef
from lucid_app.train.prompt_changes import prompt_settings
from lucid_app.ui.errors import user_errors
from lucid_app.ui.form import DEFAULT_PRESET, bounded_number, form_number
from lucid_app.ui.handlers import AppHandlers

logger = logging.getLogger(__name__)

INSPECT_KIND = "inspect"
WAIT_S = 1.0
MAX_SEEDS = MAX_INSPECT_SEEDS
INSPECT_SOURCES = ("latest", "live", "run", "upload")
# Longest wait for a running job to reach a step boundary (one step) before its Gaussians can be copied.
SNAPSHOT_TIMEOUT_S = 120.0
PLY_SUFFIX = ".ply"
# How the messages name an owner's negative library.
USER_LIBRARY = "your library"
# The inspector's "with / without the negative prompt" choice → InspectSettings.negatives.
INSPECT_VARIANTS = {"both": NEGATIVE_VARIANTS, "neg": ("neg",), "noneg": ("noneg",)}
# The live-change fields of ``set_negative`` in the order of its parameters (JobManager.set_prompt's names).
PROMPT_FIELDS = ("negative", "perp_neg", "perp_neg_weight", "front_decay", "side_decay", "front_suffix",
                 "side_suffix", "back_suffix")


def parse_int_list(text: str, name: str, minimum: int) -> tuple[int, ...]:
    """"200, 500" → (200, 500); ConfigError naming ``name`` for an empty list, more than ``MAX_INSPECT_VALUES``
    values, a non-integer, or a value below ``minimum`` or above ``MAX_TIMESTEP``."""
    if not isinstance(text, str):
        raise ConfigError(f"{name}: give whole numbers separated by commas, e.g. 200,500 (got {str(text)[:40]!r})")
    parts = [part for part in text.replace(";", ",").split(",") if part.strip()]
    if len(parts) > MAX_INSPECT_VALUES:
        raise ConfigError(f"{name}: at most {MAX_INSPECT_VALUES} values, got {len(parts)}")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        raise ConfigError(f"{name}: give whole numbers separated by commas, e.g. 200,500 (got {text[:40]!r})") from None
    if not values:
        raise ConfigError(f"{name}: give at least one value, e.g. 200,500")
    if min(values) < minimum:
        raise ConfigError(f"{name}: values must be at least {minimum}, got {min(values)}")
    if max(values) > MAX_TIMESTEP:
        raise ConfigError(f"{name}: values must be at most {MAX_TIMESTEP}, got {max(values)}")
    return values


def prompt_in_force(view: JobView) -> dict[str, Any]:
    """The job's current values of ``PROMPT_FIELDS``: the live prompt state once the trainer has one, else its
    config's."""
    state = view.controls.prompt
    if state is not None:
        return prompt_settings(state.prompt, state)
    config = from_yaml(view.config_yaml)
    return prompt_settings(config.prompt, config.guidance)


def changed_fields(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``wanted`` that differ from ``current`` (floats compared to 1e-9)."""
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, float) or isinstance(b, float):
            return abs(float(a) - float(b)) < 1e-9
        return a == b

    return {name: value for name, value in wanted.items() if not same(current.get(name), value)}


def inspect_progress_text(view: JobView) -> str:
    """One line on an inspector job: its queue position, or rows done out of all."""
    if view.state == "queued":
        return f"Inspector queued — {view.position} job(s) ahead" if view.position else "Inspector starting"
    done, total = view.progress
    return f"Inspector — pseudo-GT row {done} / {total}" if total else "Inspector — loading the model and rendering"


class GuidanceHandlers:
    """The guidance-lab tab's handlers over the app's :class:`AppHandlers` (its job manager and outputs root)."""

    def __init__(self, app: AppHandlers) -> None:
        self.app = app
        self.jobs = app.jobs

    # ------------------------------------------------------------------ the negative library

    def user_library(self, request: gr.Request | None) -> Path:
        """The caller's own negative library (:func:`lucid_app.app.run_folders.user_negatives_path`)."""
        return user_negatives_path(self.app.outputs, self.app.owner_of(request))

    def library(self, request: gr.Request | None) -> dict[str, str]:
        """The shipped library followed by the caller's saved negatives."""
        return merged_negatives(self.user_library(request))

    @user_errors
    def library_choices(self, selected: str | None = None, request: gr.Request | None = None) -> Any:
        """The library dropdown (names), keeping ``selected`` when it still exists."""
        try:
            names = list(self.library(request))
        except ConfigError as err:
            raise gr.Error(str(err)) from None
        return gr.Dropdown(choices=names, value=selected if selected in names else None)

    @user_errors
    def negative_of(self, name: str, request: gr.Request | None = None) -> str:
        """The text of the library entry ``name`` ("" for no selection)."""
        if not name:
            return ""
        try:
            return library_text(REFERENCE_PREFIX + name, self.library(request), USER_LIBRARY)
        except ConfigError as err:
            raise gr.Error(str(err)) from None

    @user_errors
    def save(self, name: str, text: str, request: gr.Request | None = None) -> tuple[Any, str]:
        """Save ``text`` as the caller's negative ``name``; returns (the refreshed dropdown, a message)."""
        try:
            save_negative(name, text, self.user_library(request))
        except ConfigError as err:
            return gr.skip(), f"Not saved: {err}"
        saved = name.strip().removeprefix(REFERENCE_PREFIX)
        return self.library_choices(saved, request), f"Saved as `@{saved}` in {USER_LIBRARY}."

    @user_errors
    def use_in_text_to_3d(self, text: str, request: gr.Request | None = None) -> tuple[str, str]:
        """(the text for the Text-to-3D tab's negative field, a message); an ``@NAME`` becomes its text there, since
        that tab resolves names of the shipped library only."""
        try:
            resolved = self.resolve_negative(text, request)
        except ConfigError as err:
            raise gr.Error(str(err)) from None
        return resolved, "Copied to the Text-to-3D tab's negative prompt."

    def resolve_negative(self, text: str, request: gr.Request | None) -> str:
        """``@NAME`` (shipped or the caller's library) → its text; other text unchanged. ConfigError for an unknown
        name."""
        return library_text(str(text or "").strip(), self.library(request), f"{USER_LIBRARY} + the shipped library")

    # ------------------------------------------------------------------ live prompt changes

    @user_errors
    def set_negative(
        self,
        negative: str,
        perp_neg: bool,
        perp_neg_weight: float,
        front_decay: float,
        side_decay: float,
        front_suffix: str,
        side_suffix: str,
        back_suffix: str,
        request: gr.Request,
    ) -> str:
        """Change the negative prompt / Perp-Neg settings of this session's running job from its next step.

        Only the fields that differ from what the job uses are sent; every problem comes back as the message.
        """
        view = self.jobs.latest(self.app.owner_of(request))
        if view is None or view.finished:
            return "No running job: start one in the Text-to-3D tab, then apply."
        try:
            if not isinstance(perp_neg, bool):
                raise ConfigError(f"perp_neg: expected true or false, got {str(perp_neg)[:40]!r}")
            wanted = {
                "negative": self.resolve_negative(negative, request), "perp_neg": perp_neg,
                "perp_neg_weight": form_number("perp_neg_weight", perp_neg_weight),
                "front_decay": form_number("front_decay", front_decay),
                "side_decay": form_number("side_decay", side_decay), "front_suffix": str(front_suffix),
                "side_suffix": str(side_suffix), "back_suffix": str(back_suffix),
            }
            changes = changed_fields(prompt_in_force(view), wanted)
            if not changes:
                return "Nothing to change: the running job already uses these settings."
            change = self.jobs.set_prompt(view.id, **changes)
        except (JobError, ValueError) as err:  # ConfigError and JobError are ValueErrors
            return f"Not applied: {err}"
        shown = ", ".join(f"{name} = {value!r}" for name, value in changes.items())
        return f"From step {change.step}: {shown}."

    # ------------------------------------------------------------------ the inspector

    @user_errors
    def inspect(
        self,
        source: str,
        run: str | None,
        ply_file: str | None,
        prompt: str,
        model: str,
        camera: str,
        azimuth_deg: float,
        elevation_deg: float,
        radius: float,
        timesteps: str,
        delta_ts: str,
        seeds: float,
        variants: str,
        negative: str,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Any, str]:
        """Queue the pseudo-GT inspector on the job worker and wait for it; returns (grid image, JSON text).

        ``source="live"`` inspects the Gaussians of this session's running job as they are now (a snapshot taken
        between two of its steps), beside the training rather than queued after it."""
        if source == "live":
            return self.inspect_live(run, ply_file, prompt, model, camera, azimuth_deg, elevation_deg, radius,
                                     timesteps, delta_ts, seeds, variants, negative, request, progress)
        try:
            inspect_request = self.inspect_request(source, run, ply_file, prompt, model, camera, azimuth_deg,
                                                   elevation_deg, radius, timesteps, delta_ts, seeds, variants,
                                                   negative, request)
            view = self.jobs.submit_task(inspect_task(inspect_request), inspect_request.config,
                                         session=self.app.owner_of(request), kind=INSPECT_KIND)
        except (JobError, ValueError) as err:
            raise gr.Error(str(err)) from None
        while not view.finished:
            done, total = view.progress
            progress(done / total if total else 0.0, desc=inspect_progress_text(view))
            view = self.jobs.wait(view.id, view.version, timeout_s=WAIT_S)
        if view.state != "done":
            raise gr.Error(f"The inspector did not finish ({view.state}): {view.message}")
        return view.preview, self.public_json(view.data)

    def public_json(self, data: dict[str, Any]) -> str:
        """The inspector's numbers as JSON text for the client: its model without server folders."""
        shown = dict(data)
        if isinstance(shown.get("model"), str):
            shown["model"] = public_path(shown["model"], self.app.outputs)
        return json.dumps(shown, indent=2)

    def inspect_live(self, run: str | None, ply_file: str | None, prompt: str, model: str, camera: str,
                     azimuth_deg: float, elevation_deg: float, radius: float, timesteps: str, delta_ts: str,
                     seeds: float, variants: str, negative: str, request: gr.Request,
                     progress: gr.Progress) -> tuple[Any, str]:
        """The inspector on a snapshot of this session's running job, run here, beside its training."""
        try:
            view = self.jobs.latest(self.app.owner_of(request))
            if view is None or view.finished:
                raise JobError("This session has no running job: generate one in the Text-to-3D tab, or inspect "
                               "its latest or a past run.")
            progress(0.0, desc="Inspector — waiting for the running job's next step")
            snapshot = self.jobs.live_gaussians(view.id, timeout_s=SNAPSHOT_TIMEOUT_S)
            base = self.inspect_request("latest", run, ply_file, prompt, model, camera, azimuth_deg, elevation_deg,
                                        radius, timesteps, delta_ts, seeds, variants, negative, request)
            live = InspectRequest(config=base.config, snapshot=snapshot, negative=base.negative, camera=base.camera,
                                  azimuth_deg=base.azimuth_deg, elevation_deg=base.elevation_deg, radius=base.radius,
                                  settings=base.settings)

            def report(done: int, total: int) -> None:
                progress(done / total if total else 0.0, desc=f"Inspector (live, step {snapshot.step}) — pseudo-GT "
                                                              f"row {done} / {total}")

            context = TaskContext(device=self.jobs.device,
                                  load_prior=lambda m: self.jobs.cache.get(m, self.jobs.device),
                                  folder=view.run_dir / "inspect" / f"step{snapshot.step:05d}", progress=report)
            result = inspect_task(live)(context)
        except (JobError, ValueError) as err:
            raise gr.Error(str(err)) from None
        return result.image, self.public_json(result.data)

    def inspect_request(
        self,
        source: str,
        run: str | None,
        ply_file: str | None,
        prompt: str,
        model: str,
        camera: str,
        azimuth_deg: float,
        elevation_deg: float,
        radius: float,
        timesteps: str,
        delta_ts: str,
        seeds: float,
        variants: str,
        negative: str,
        request: gr.Request | None,
    ) -> InspectRequest:
        """The inspector's request from the tab's fields.

        Raises:
            ConfigError: a bad list, seed count, choice, prompt or negative. JobError: no such run / job.
        """
        # Every source refuses an unknown model name the same way, before anything else is read.
        ref = self.app.models.resolve(model)
        if variants not in INSPECT_VARIANTS:
            raise ConfigError(f"with/without negative: pick one of {sorted(INSPECT_VARIANTS)}, got {variants!r}")
        if camera not in CAMERA_MODES:
            raise ConfigError(f"camera: pick one of {CAMERA_MODES}, got {camera!r}")
        n_seeds = form_number("seeds", seeds, integer=True)
        if not 1 <= n_seeds <= MAX_SEEDS:
            raise ConfigError(f"seeds: between 1 and {MAX_SEEDS}, got {seeds}")
        settings = InspectSettings(timesteps=parse_int_list(timesteps, "t", 0),
                                   delta_ts=parse_int_list(delta_ts, "δ_T", 1), seeds=int(n_seeds),
                                   negatives=INSPECT_VARIANTS[variants])
        azimuth = bounded_number("azimuth", azimuth_deg, AzimuthDeg)
        elevation = bounded_number("elevation", elevation_deg, ElevationDeg)
        distance = bounded_number("radius", radius, Length)
        config, run_dir, ply = self._inspect_source(source, run, ply_file, prompt, ref, request)
        text = str(negative or "").strip()
        return InspectRequest(
            config=config, run_dir=run_dir, ply=ply, negative=self.resolve_negative(text, request) if text else None,
            camera=camera, azimuth_deg=azimuth, elevation_deg=elevation, radius=distance, settings=settings,
        )

    def _inspect_source(
        self, source: str, run: str | None, ply_file: str | None, prompt: str, ref: ModelRef | None,
        request: gr.Request | None,
    ) -> tuple[TrainConfig, Path | None, Path | None]:
        """(config, run folder, .ply) of the inspector's source; the run folder is read when the task starts. ``ref``
        is the model an uploaded ``.ply`` is inspected with (None: the default preset's).

        Raises:
            ConfigError / JobError: an unknown source, no such run of the caller's, no uploaded ``.ply`` file, or no
                prompt for it.
        """
        if source == "latest":
            view = self.jobs.latest(self.app.owner_of(request))
            if view is None:
                raise JobError("This session has no run yet: generate one in the Text-to-3D tab, pick a past run, "
                               "or upload a .ply.")
            if view.state in ("failed", "cancelled"):
                raise JobError(f"This session's latest run {view.state}: {view.message}")
            return from_yaml(view.config_yaml), view.run_dir, None
        if source == "run":
            if not run:
                raise JobError("Pick a past run from the list first.")
            run_dir = self.app.run_folder(run, request)
            return from_yaml((run_dir / CONFIG_NAME).read_text(encoding="utf-8")), run_dir, None
        if source == "upload":
            if not ply_file or Path(ply_file).suffix.lower() != PLY_SUFFIX or not Path(ply_file).is_file():
                raise JobError("Upload a 3D Gaussian Splatting .ply file first.")
            if not str(prompt or "").strip():
                raise ConfigError("Give the prompt the uploaded object should be inspected with.")
            config = self.app.client_config(DEFAULT_PRESET, str(prompt).strip(), ref)
            # Read here, before the job is queued: a file that is not 3D Gaussians, or holds NaN, is one line now.
            read_gaussian_ply(ply_file)
            return config, None, Path(ply_file)
        raise ConfigError(f"source: pick one of {INSPECT_SOURCES}, got {str(source)[:40]!r}")


def default_prompt_controls() -> dict[str, Any]:
    """Starting values of the live-change fields: the config defaults (the paper's negative, Perp-Neg off)."""
    return prompt_settings(PromptConfig(), GuidanceConfig())
