"""The Avatar tab: a posed SMPL body guided by a body-part ControlNet, through the same job manager and streaming as
the text-to-3D tab.

The tab's fields become ``avatar.*`` / ``model.controlnet_scale`` overrides on the ``avatar`` preset (so a run's
``config.yaml`` records the avatar and the trainer rebuilds the body from it); the pose preview is the part map of
the chosen pose seen from the front, as an RGB array. Named API endpoints: ``/generate_avatar`` (streams) and
``/avatar_preview``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np

from lucid_app.avatar import check_avatar, front_part_map
from lucid_app.avatar.body import AvatarError, pose_names
from lucid_app.config import AvatarConfig
from lucid_app.presets import load_config
from lucid_app.ui.handlers import (
    APP_EXPORTS_MESH,
    GENERATE_OUTPUTS,
    MAX_STEPS,
    AppHandlers,
)
from lucid_app.ui.panels import run_outputs_panel

AVATAR_PRESET = "avatar"
PREVIEW_SIZE_PX = 256
# Order of ``AvatarHandlers.generate``'s parameters (the tab builds one component per field).
AVATAR_FIELDS = ("smpl_dir", "pose", "prompt", "negative", "controlnet_scale", "steps", "seed")
NO_SMPL_DIR = "Enter the folder with SMPL_NEUTRAL.pkl to preview the pose (see the README, Avatar mode)."


def avatar_overrides(smpl_dir: str, pose: str, controlnet_scale: float | None) -> list[str]:
    """``section.key=value`` overrides that turn a run into an avatar run of ``pose`` on the SMPL files in
    ``smpl_dir``; strings are JSON-quoted so paths with ``:`` or ``#`` reach the loader unchanged."""
    overrides = [
        "avatar.enabled=true",
        f"avatar.smpl_dir={json.dumps(str(smpl_dir).strip())}",
        f"avatar.pose={json.dumps(str(pose or AvatarConfig.pose).strip())}",
    ]
    if controlnet_scale is not None:
        overrides.append(f"model.controlnet_scale={float(controlnet_scale)!r}")
    return overrides


def pose_preview(smpl_dir: str, pose: str) -> tuple[np.ndarray | None, str]:
    """The front part map of ``pose`` ([H, W, 3] uint8) and "", or None and a message saying what is wrong."""
    if not str(smpl_dir or "").strip():
        return None, NO_SMPL_DIR
    try:
        return front_part_map(str(smpl_dir).strip(), pose or AvatarConfig.pose, size_px=PREVIEW_SIZE_PX), ""
    except AvatarError as err:
        return None, str(err)


class AvatarHandlers:
    """The Avatar tab's handlers over the app's :class:`AppHandlers` (its job manager and streaming)."""

    def __init__(self, app: AppHandlers) -> None:
        self.app = app

    def generate(
        self,
        smpl_dir: str,
        pose: str,
        prompt: str,
        negative: str,
        controlnet_scale: float,
        steps: float,
        seed: float,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        """Queue an avatar job for this session and stream it like the text-to-3D tab (``GENERATE_OUTPUTS``)."""
        form = {
            "prompt": prompt, "negative": negative, "preset": AVATAR_PRESET, "model": "", "steps": steps,
            "seed": seed, "export_mesh": APP_EXPORTS_MESH,
            "extra_overrides": "\n".join(avatar_overrides(smpl_dir, pose, controlnet_scale)),
        }
        config = self.app.resolve_form(form)
        try:
            check_avatar(config)
        except AvatarError as err:
            raise gr.Error(str(err)) from None
        yield from self.app.stream_job(config, request)


def build_avatar_tab(app: AppHandlers, banner: gr.components.Component) -> None:
    """The Avatar tab inside the caller's ``gr.Blocks``; ``banner`` is the page's shared notice line."""
    handlers = AvatarHandlers(app)
    start = load_config(AVATAR_PRESET)
    c: dict[str, gr.components.Component] = {"banner": banner}
    with gr.Tab("Avatar"):
        with gr.Row():
            with gr.Column(scale=2):
                c["smpl_dir"] = gr.Textbox(label="SMPL folder (with SMPL_NEUTRAL.pkl)", elem_id="lucid-smpl-dir",
                                           placeholder="/path/to/smpl")
                with gr.Row():
                    c["pose"] = gr.Dropdown(pose_names(), value=start.avatar.pose, allow_custom_value=True,
                                            label="Pose (preset, or a .npz/.json file)")
                    c["pose_refresh"] = gr.Button("Preview pose", scale=0)
                c["pose_image"] = gr.Image(label="Part map (front)", type="numpy", interactive=False, height=256)
                c["pose_msg"] = gr.Markdown(NO_SMPL_DIR)
                c["prompt"] = gr.Textbox(label="Prompt", value=start.prompt.text, lines=2)
                c["negative"] = gr.Textbox(label="Negative prompt", value=start.prompt.negative, lines=2)
                c["controlnet_scale"] = gr.Slider(0, 2, start.model.controlnet_scale, step=0.05,
                                                  label="ControlNet scale")
                with gr.Row():
                    c["steps"] = gr.Number(start.optim.steps, label="Steps", precision=0, minimum=1,
                                           maximum=MAX_STEPS)
                    c["seed"] = gr.Number(start.seed, label="Seed", precision=0, minimum=0)
                c["generate"] = gr.Button("Generate avatar", variant="primary", elem_id="lucid-generate-avatar")
            with gr.Column(scale=3):
                c["status"] = gr.HTML()
                c["preview"] = gr.Image(label="Current views", type="numpy", interactive=False, height=360)
                c["stop"] = gr.Button("Stop", variant="stop")
                c["control_msg"] = gr.Markdown()
                run_outputs_panel(c)

    gr.on([c["pose"].change, c["smpl_dir"].submit, c["pose_refresh"].click], pose_preview,
          inputs=[c["smpl_dir"], c["pose"]], outputs=[c["pose_image"], c["pose_msg"]], api_name="avatar_preview")
    c["generate"].click(
        handlers.generate, inputs=[c[name] for name in AVATAR_FIELDS], outputs=[c[n] for n in GENERATE_OUTPUTS],
        api_name="generate_avatar", concurrency_limit=None, show_progress="hidden",
    )
    # Its own (private) name: the text-to-3D tab's ``/stop`` stays the session's stop endpoint.
    c["stop"].click(app.stop, outputs=c["control_msg"], api_name="avatar_stop", api_visibility="private",
                    concurrency_limit=None, show_progress="hidden")
