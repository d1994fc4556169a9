"""The Avatar tab: a posed SMPL body guided by a body-part ControlNet, through the same job manager and streaming as
the text-to-3D tab.

The SMPL folder is the server's setting (``app.py --smpl-dir``, held by :class:`AppHandlers` as ``smpl_dir``),
never a client's: the tab offers the genders converted there, and every job gets that folder as
``avatar.smpl_dir`` after the client's form is resolved. The tab's fields become ``avatar.*`` /
``model.controlnet_scale`` overrides on the ``avatar`` preset (so a run's ``config.yaml`` records the avatar and
the trainer rebuilds the body from it); the pose preview is the part map of the chosen pose seen from the front,
as an RGB array. Poses are picked by name from the shipped presets only: no client names a pose file, and an unknown
name is refused before anything is read. Named API endpoints: ``/generate_avatar`` (streams) and
``/avatar_preview``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
import numpy as np

from lucid_app.avatar import check_avatar, front_part_map
from lucid_app.avatar.body import GENDERS, AvatarError, Gender, available_genders, load_pose, pose_names
from lucid_app.config import MAX_STEPS, AvatarConfig, TrainConfig, replace
from lucid_app.config.presets import load_config
from lucid_app.ui.errors import public_text, user_errors
from lucid_app.ui.form import APP_EXPORTS_MESH, form_number
from lucid_app.ui.handlers import GENERATE_OUTPUTS, AppHandlers
from lucid_app.ui.panels import FILL_CLASS, ZOOM_CLASS, run_outputs_panel, wire_plot_toggles

logger = logging.getLogger(__name__)

AVATAR_PRESET = "avatar"
PREVIEW_SIZE_PX = 256
# Order of ``AvatarHandlers.generate``'s parameters (the tab builds one component per field).
AVATAR_FIELDS = ("gender", "pose", "prompt", "negative", "controlnet_scale", "steps", "seed")
NO_SMPL_MODEL = ("This server has no SMPL body model; its administrator can add one "
                 "(see the README, Avatar mode).")
# The tab's one notice on a server without SMPL files (the form is hidden then): what the administrator runs.
NO_SMPL_NOTICE = (
    "**Avatar mode needs an SMPL body model, and this server has none.** Its administrator registers at "
    "https://smpl.is.tue.mpg.de, downloads \"SMPL for Python\", converts it once and restarts the app with it:\n\n"
    "```\npython -m lucid_app smpl-convert ~/Downloads/smpl ~/smpl\npython app.py --smpl-dir ~/smpl\n```"
)
MODEL_FAILED = ("The server's SMPL body model could not be loaded; its administrator can find why in the "
                "server log.")


def smpl_notice(genders: Sequence[str]) -> str:
    """The tab's line about the body models this server has (:data:`NO_SMPL_NOTICE` when it has none)."""
    return f"SMPL models on this server: {', '.join(genders)}." if genders else NO_SMPL_NOTICE


def avatar_overrides(pose: str, gender: str, controlnet_scale: float | None) -> list[str]:
    """``section.key=value`` overrides that turn a run into an avatar run of ``pose``; strings are JSON-quoted so
    file names with ``:`` or ``#`` reach the loader unchanged. The SMPL folder is not among them: it is the
    server's, set by :meth:`AvatarHandlers.generate`."""
    overrides = [
        "avatar.enabled=true",
        f"avatar.pose={json.dumps(str(pose or AvatarConfig.pose).strip())}",
        f"avatar.gender={json.dumps(str(gender))}",
    ]
    if controlnet_scale is not None:
        overrides.append(f"model.controlnet_scale={form_number('controlnet_scale', controlnet_scale)!r}")
    return overrides


class AvatarHandlers:
    """The Avatar tab's handlers over the app's :class:`AppHandlers` (its job manager, streaming and the server's
    SMPL folder ``app.smpl_dir``)."""

    def __init__(self, app: AppHandlers) -> None:
        self.app = app

    def genders(self) -> list[Gender]:
        """The genders with a converted SMPL model in the server's folder (none without one)."""
        return available_genders(self.app.smpl_dir) if self.app.smpl_dir else []

    def check_gender(self, gender: str | None) -> Gender:
        """``gender`` ("" = neutral) if the server has its model.

        Raises:
            AvatarError: no SMPL model on the server, or none for ``gender`` (a message for the web user).
        """
        available = self.genders()
        if not available:
            raise AvatarError(NO_SMPL_MODEL)
        name = str(gender or "neutral")
        if name not in available:
            known = "" if name in GENDERS else f"{name[:20]!r} is not an SMPL gender; "
            raise AvatarError(f"{known}this server has SMPL models for: {', '.join(available)}")
        return name  # type: ignore[return-value]

    @user_errors
    def preview(self, gender: str, pose: str) -> tuple[np.ndarray | None, str]:
        """The front part map of the pose named ``pose`` ([H, W, 3] uint8) and "", or None and a message saying what
        is wrong."""
        name = str(pose or AvatarConfig.pose)
        if name not in pose_names():
            return None, f"Unknown pose: pick one of {', '.join(pose_names())}."
        try:
            body_gender = self.check_gender(gender)
            body_pose = load_pose(name)
        except AvatarError as err:
            return None, public_text(str(err))
        try:
            return front_part_map(self.app.smpl_dir, body_pose, body_gender, size_px=PREVIEW_SIZE_PX), ""
        except AvatarError as err:
            # The message names server files: it goes to the log, the web user gets a plain line.
            logger.error("avatar preview: %s", err)
            return None, MODEL_FAILED

    def resolve(self, gender: str, pose: str, prompt: str, negative: str, controlnet_scale: float, steps: float,
                seed: float) -> TrainConfig:
        """The avatar job's config: the form on the ``avatar`` preset, then the server's SMPL folder.

        Raises:
            gr.Error: a bad field, no SMPL model for ``gender``, a bad pose or no ControlNet.
        """
        try:
            body_gender = self.check_gender(gender)
        except AvatarError as err:
            raise gr.Error(str(err)) from None
        form = {
            "prompt": prompt, "negative": negative, "preset": AVATAR_PRESET, "model": "", "steps": steps,
            "seed": seed, "export_mesh": APP_EXPORTS_MESH,
            "extra_overrides": "\n".join(avatar_overrides(pose, body_gender, controlnet_scale)),
        }
        config = self.app.resolve_form(form)
        config = replace(config, avatar=replace(config.avatar, smpl_dir=self.app.smpl_dir))
        try:
            check_avatar(config)
        except AvatarError as err:
            raise gr.Error(public_text(str(err))) from None
        return config

    @user_errors
    def generate(
        self,
        gender: str,
        pose: str,
        prompt: str,
        negative: str,
        controlnet_scale: float,
        steps: float,
        seed: float,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        """Queue an avatar job for this session and stream it like the text-to-3D tab (``GENERATE_OUTPUTS``)."""
        config = self.resolve(gender, pose, prompt, negative, controlnet_scale, steps, seed)
        yield from self.app.stream_job(config, request, generate_label="Generate avatar")


def build_avatar_tab(app: AppHandlers, banner: gr.components.Component) -> None:
    """The Avatar tab inside the caller's ``gr.Blocks``; ``banner`` is the page's shared notice line."""
    handlers = AvatarHandlers(app)
    start = load_config(AVATAR_PRESET)
    genders = handlers.genders()
    choices = genders or ["neutral"]
    c: dict[str, gr.components.Component] = {"banner": banner}
    with gr.Tab("Avatar"):
        c["smpl_notice"] = gr.Markdown(smpl_notice(genders), elem_id="lucid-smpl-notice")
        # Without SMPL files there is nothing to do here: the notice above says what the administrator runs.
        with gr.Row(visible=bool(genders), elem_id="lucid-avatar-form"):
            with gr.Column(scale=2):
                with gr.Row():
                    c["gender"] = gr.Dropdown(choices, value="neutral" if "neutral" in choices else choices[0],
                                              label="Body model", interactive=len(genders) > 1, scale=0,
                                              min_width=120)
                    c["pose"] = gr.Dropdown(pose_names(), value=start.avatar.pose, label="Pose")
                    c["pose_refresh"] = gr.Button("Preview pose", scale=0)
                c["pose_image"] = gr.Image(label="Part map (front)", type="numpy", interactive=False, height=256)
                c["pose_msg"] = gr.Markdown("")
                c["prompt"] = gr.Textbox(label="Prompt", value=start.prompt.text, lines=2)
                c["negative"] = gr.Textbox(label="Negative prompt", value=start.prompt.negative, lines=2)
                c["controlnet_scale"] = gr.Slider(0, 2, start.model.controlnet_scale, step=0.05,
                                                  label="ControlNet scale")
                with gr.Row():
                    c["steps"] = gr.Number(start.optim.steps, label="Steps", precision=0, minimum=1,
                                           maximum=MAX_STEPS)
                    c["seed"] = gr.Number(start.seed, label="Seed", precision=0, minimum=0)
                c["generate"] = gr.Button("Generate avatar", variant="primary", elem_id="lucid-generate-avatar",
                                          interactive=bool(genders))
            with gr.Column(scale=3):
                c["status"] = gr.HTML()
                c["preview"] = gr.Image(label="Views (click to enlarge)", type="numpy", interactive=False,
                                        height=420, elem_classes=[ZOOM_CLASS, FILL_CLASS])
                with gr.Row():
                    c["pause_toggle"] = gr.Button("Pause", interactive=False)
                    c["stop"] = gr.Button("Stop", variant="stop", interactive=False)
                c["control_msg"] = gr.Markdown()
                # The tab has no live sliders: the stream's slider values land in these.
                c["gs_live"], c["dt_live"] = gr.State(), gr.State()
                run_outputs_panel(c)

    gr.on([c["pose"].change, c["gender"].change, c["pose_refresh"].click], handlers.preview,
          inputs=[c["gender"], c["pose"]], outputs=[c["pose_image"], c["pose_msg"]], api_name="avatar_preview")
    c["generate"].click(
        handlers.generate, inputs=[c[name] for name in AVATAR_FIELDS], outputs=[c[n] for n in GENERATE_OUTPUTS],
        api_name="generate_avatar", concurrency_limit=None, show_progress="hidden", preprocess=False,  # see layout.py
    )
    # Its own (private) name: the text-to-3D tab's ``/stop`` stays the session's stop endpoint.
    c["stop"].click(app.stop, outputs=c["control_msg"], api_name="avatar_stop", api_visibility="private",
                    concurrency_limit=None, show_progress="hidden")
    c["pause_toggle"].click(app.toggle_pause, outputs=[c["control_msg"], c["pause_toggle"]], api_visibility="private",
                            concurrency_limit=None, show_progress="hidden")
    wire_plot_toggles(c, app.show_raw)
