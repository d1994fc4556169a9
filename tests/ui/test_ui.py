"""The app's handlers without a browser: form → overrides → config, validation, streaming, controls, safety."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tests.app_harness  # noqa: F401  (Gradio's environment before gradio is imported)

from lucid_app.app.job_board import JobView  # noqa: E402
from lucid_app.config import PAPER_NEGATIVE  # noqa: E402
from lucid_app.train.controls import ControlState  # noqa: E402
from lucid_app.train.events import StepEvent  # noqa: E402
from lucid_app.config.presets import load_config  # noqa: E402
from lucid_app.train.prepare import resolve_config  # noqa: E402
from tests.helpers import FakeJobs, REQUEST, job_view  # noqa: E402


def _form(**changes) -> dict:
    from lucid_app.ui.handlers import form_values

    form = {**form_values(load_config("demo")), "negative": PAPER_NEGATIVE, "preset": "demo", "model": "",
            "extra_overrides": ""}
    form.update(changes)
    return form


def test_generate_signature_matches_form_fields() -> None:
    from lucid_app.ui.handlers import AppHandlers, FORM_FIELDS

    params = list(inspect.signature(AppHandlers.generate).parameters)
    assert params[1:-1] == list(FORM_FIELDS) and params[-1] == "request"


def test_form_table_gives_values_and_schema_limits() -> None:
    from lucid_app.ui.handlers import form_values

    from lucid_app.config import MAX_STEPS, RENDER_SIZE_RANGE_PX
    from lucid_app.ui.form import FIELD, FIELDS

    assert set(form_values(load_config("demo"))) == {f.name for f in FIELDS if f.keys}
    assert FIELD["steps"].limits == (1, MAX_STEPS) and FIELD["resolution"].limits == RENDER_SIZE_RANGE_PX


def test_every_form_field_reaches_the_config(tmp_path: Path) -> None:
    from lucid_app.ui.handlers import AppHandlers

    form = _form(prompt="a red toy car", method="sds", steps=42, seed=7, init_shape="box", perp_neg=True,
                 export_mesh=True, guidance_scale=12.5, delta_t=60, preview_every=3, resolution=48, batch_size=2,
                 radius_min=3.0, radius_max=3.5, polar_min_deg=50.0, polar_max_deg=95.0, fovy_min_rad=0.4,
                 fovy_max_rad=0.5, delta_t_start=90, xs_delta_t=150, xs_inv_steps=3, lambda_guidance=0.2,
                 extra_overrides="init.num_points=123\n# a comment\n")
    config = AppHandlers(FakeJobs(tmp_path)).resolve_form(form)
    g = config.guidance
    assert (config.prompt.text, config.prompt.negative, config.seed, config.optim.steps) == (
        "a red toy car", PAPER_NEGATIVE, 7, 42)
    assert (g.method, g.perp_neg, g.guidance_scale, g.delta_t, g.delta_t_start, g.xs_delta_t, g.xs_inv_steps,
            g.lambda_guidance) == ("sds", True, 12.5, 60, 90, 150, 3, 0.2)
    assert (config.render.width, config.render.height, config.cameras.batch_size) == (48, 48, 2)
    assert config.cameras.radius_range == (3.0, 3.5) and config.cameras.polar_range_deg == (50.0, 95.0)
    assert config.cameras.fovy_range_rad == (0.4, 0.5) and config.export.preview_every == 3
    assert (config.init.shape, config.init.num_points, config.export.mesh) == ("box", 123, True)
    assert config.model.id.startswith("multiview:")
    # The form's values of a preset reproduce the preset exactly.
    demo = resolve_config("demo")
    form = _form(prompt=demo.prompt.text, negative=demo.prompt.negative)
    assert AppHandlers(FakeJobs(tmp_path)).resolve_form(form) == demo


@pytest.mark.parametrize(("changes", "message"), [
    ({"prompt": "   "}, "prompt is empty"),
    ({"steps": 0}, "steps must be between"),
    ({"steps": 10**6}, "steps must be between"),
    ({"resolution": 4}, "resolution must be between"),
    ({"model": "not a model!"}, "unknown model"),
    ({"model": "multiview:/no/such/folder"}, "unknown model"),
    ({"extra_overrides": "guidance.no_such_key=1"}, "unknown key guidance.no_such_key"),
    ({"extra_overrides": "just words"}, "section.key=value"),
    ({"polar_min_deg": 100.0, "polar_max_deg": 50.0}, "minimum 100.0 is above"),
    ({"preset": "no_such_preset"}, "available presets"),
])
def test_bad_input_gives_clear_errors(tmp_path: Path, changes: dict, message: str) -> None:
    import gradio as gr
    from lucid_app.ui.handlers import AppHandlers

    handlers = AppHandlers(FakeJobs(tmp_path))
    with pytest.raises(gr.Error, match=message):
        next(handlers.generate(**_form(**changes), request=REQUEST))


def test_models_are_picked_by_name(tmp_path: Path) -> None:
    from lucid_app.ui.handlers import AppHandlers

    handlers = AppHandlers(FakeJobs(tmp_path))
    assert handlers.resolve_form(_form(model="offline-demo")).model.id.startswith("multiview:")
    assert handlers.resolve_form(_form(model="learned-demo")).model.id.endswith("demo_prior")
    assert handlers.resolve_form(_form(model="")).model.id == resolve_config("demo").model.id


def test_generate_streams_job_snapshots(tmp_path: Path) -> None:
    import gradio as gr
    from lucid_app.ui.handlers import AppHandlers, GENERATE_OUTPUTS

    run = tmp_path / "s" / "r"
    run.mkdir(parents=True)
    (run / "model.ply").write_bytes(b"ply")
    (run / "config.yaml").write_text("seed: 0\n")
    outside = tmp_path.parent / "elsewhere.mp4"
    preview = np.zeros((8, 8, 3), np.uint8)
    script = [
        job_view("queued", version=1, position=1),
        job_view("running", steps=2, version=2, preview=preview, preview_step=2),
        job_view("running", steps=3, version=3, preview=preview, preview_step=2),
        job_view("done", steps=4, version=4, outcome="done", message="finished 4 steps", run_dir=run,
              files={"ply": str(run / "model.ply"), "config": str(run / "config.yaml"), "video": str(outside)}),
    ]
    jobs = FakeJobs(tmp_path, script)
    handlers = AppHandlers(jobs, stream_interval_s=0.0)
    outputs = [dict(zip(GENERATE_OUTPUTS, out)) for out in handlers.generate(**_form(), request=REQUEST)]
    assert jobs.calls[0][0] == "submit" and jobs.calls[0][2] == handlers.owner_of(REQUEST) != "sess-a"
    # The end comes in two updates, the mesh viewer's file before the splat viewer's (mesh_before_splat).
    assert [o["job"]["state"] for o in outputs] == ["queued", "running", "running", "done", "done"]
    assert outputs[-2]["model3d"] == gr.skip() and outputs[-1]["mesh3d"] == gr.skip()
    assert "position 1" in outputs[0]["status"] and outputs[0]["job"]["position"] == 1
    assert isinstance(outputs[1]["preview"], np.ndarray)
    assert outputs[2]["preview"] == gr.skip()  # unchanged preview is not re-sent
    assert "step 3 / 10" in outputs[2]["status"] and "300 Gaussians" in outputs[2]["status"]
    guidance = outputs[2]["guidance_plot"]
    assert list(guidance.columns) == ["step", "value", "series"] and len(guidance) == 3  # one smoothed line, 3 steps
    assert outputs[2]["regularisers_plot"] == gr.skip()  # no regulariser logged: nothing to draw yet
    # The previous run's line under the controls ("Stopping…") goes when a run starts, and at its end.
    assert (outputs[0]["control_msg"] == "" and outputs[2]["control_msg"] == gr.skip()
            and outputs[-1]["control_msg"] == "")
    # The prompt box and live sliders are left alone while the run keeps the values it was queued with.
    assert all(o[k] == gr.skip() for o in outputs for k in ("prompt", "gs_live", "dt_live"))
    final = outputs[-1]
    # The client gets a copy of model.ply under a random name outside the outputs folder, and the run by its name.
    assert Path(final["model3d"]).read_bytes() == b"ply" and not Path(final["model3d"]).is_relative_to(tmp_path)
    assert final["job"]["run"] == "r"
    assert final["video"] is None  # a file outside the outputs root is never served
    assert final["dl_ply"].visible and not final["dl_mesh"].visible
    # The buttons follow the job: "Queued #1" and Stop (as Cancel) while queued, the step while running, back at the
    # end.
    assert (outputs[0]["generate"].value, outputs[0]["generate"].interactive) == ("Queued #1", False)
    assert outputs[0]["stop"].interactive and outputs[0]["stop"].value == "Cancel"
    assert not outputs[0]["pause_toggle"].interactive
    assert outputs[2]["generate"].value == "Running · step 3 / 10" and outputs[2]["pause_toggle"].interactive
    assert final["generate"].value == "Generate" and final["generate"].interactive
    assert not final["stop"].interactive and not final["pause_toggle"].interactive


def test_the_form_follows_a_run_the_offline_demo_stood_in_for(tmp_path: Path) -> None:
    """The hamburger preset without Stable Diffusion weights: the demo trains "a red toy car" at its own δ_T, and
    the prompt box and the live sliders say so, once."""
    import gradio as gr
    from lucid_app.ui.handlers import AppHandlers, GENERATE_OUTPUTS

    asked = ControlState(guidance_scale=7.5, delta_t=50, delta_t_start=100, preview_every=2)
    demo = ControlState(guidance_scale=7.5, delta_t=80, delta_t_start=100, preview_every=50)
    script = [
        job_view("queued", version=1, prompt="A delicious hamburger.", controls=asked),
        job_view("running", steps=1, version=2, prompt="a red toy car", controls=demo, notice="Running the demo."),
        job_view("running", steps=2, version=3, prompt="a red toy car", controls=demo, notice="Running the demo."),
        job_view("done", steps=2, version=4, prompt="a red toy car", controls=demo, outcome="done"),
    ]
    handlers = AppHandlers(FakeJobs(tmp_path, script), stream_interval_s=0.0)
    outputs = [dict(zip(GENERATE_OUTPUTS, out)) for out in handlers.generate(**_form(), request=REQUEST)]
    assert (outputs[1]["prompt"], outputs[1]["gs_live"], outputs[1]["dt_live"]) == ("a red toy car", 7.5, 80)
    assert all(o[k] == gr.skip() for o in outputs[2:] for k in ("prompt", "gs_live", "dt_live")), "sent once"
    assert "Offline demo" in outputs[1]["banner"]


def test_controls_act_on_the_sessions_job(tmp_path: Path) -> None:
    from lucid_app.ui.handlers import AppHandlers

    jobs = FakeJobs(tmp_path)
    handlers = AppHandlers(jobs)
    assert "guidance scale 12" in handlers.set_controls(12.0, 60, REQUEST)
    assert ("set_controls", "j1", {"guidance_scale": 12.0, "delta_t": 60}) in jobs.calls
    assert "Stopping" in handlers.stop(REQUEST) and ("cancel", "j1") in jobs.calls
    handlers.unload(REQUEST)
    assert jobs.calls[-1] == ("cancel_session", handlers.owner_of(REQUEST))


def test_results_only_from_run_folders(tmp_path: Path) -> None:
    import gradio as gr
    from lucid_app.ui.handlers import AppHandlers, OPEN_OUTPUTS

    out = tmp_path / "out"
    handlers = AppHandlers(FakeJobs(out))
    run = out / handlers.owner_of(REQUEST) / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("prompt:\n  text: a snowman\n")
    (run / "model.ply").write_bytes(b"ply")
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    ply, video, config, mesh, summary = handlers.result("r", REQUEST)
    assert Path(ply).read_bytes() == b"ply" and video is None and summary == {"run": "r"}
    assert "a snowman" in Path(config).read_text()
    for bad in ("..", "../..", str(tmp_path), "sess-a/../../", "sess-a/../sess-a/r", f"{run.parent.name}/../r"):
        with pytest.raises(gr.Error):
            handlers.result(bad, REQUEST)
    opened = dict(zip(OPEN_OUTPUTS, handlers.open_run("r", REQUEST)))
    assert opened["model3d"] == ply and "a snowman" in opened["config"] and "`r`" in opened["banner"]
    assert handlers.runs_choices(REQUEST).choices == [("r — a snowman", "r")]
    assert opened["mesh3d"] is None and "Not finished" in opened["status"]
    (run / "mesh.glb").write_bytes(b"glTF")
    shown = dict(zip(OPEN_OUTPUTS, handlers.open_run("r", REQUEST)))
    assert Path(shown["mesh3d"]).read_bytes() == b"glTF" and shown["dl_mesh"].visible
    assert not shown["dl_mesh_zip"].visible, "an untextured mesh has no .obj set"
    # A textured mesh: the viewer shows its copy, the .obj set's .zip is a download too (served copies only).
    (run / "mesh_view.glb").write_bytes(b"glTF view")
    (run / "mesh_obj.zip").write_bytes(b"PK zip")
    textured = dict(zip(OPEN_OUTPUTS, handlers.open_run("r", REQUEST)))
    assert Path(textured["mesh3d"]).read_bytes() == b"glTF view" and textured["dl_mesh_zip"].visible
    served_zip = Path(textured["dl_mesh_zip"].value["path"])
    assert served_zip.read_bytes() == b"PK zip" and not served_zip.is_relative_to(tmp_path)


def test_a_reopened_run_shows_what_its_live_run_showed(tmp_path: Path) -> None:
    """Reopening reads metrics.jsonl back into the plots, the final views into the preview, the end into the
    status line; the raw-values toggle redraws the plot it belongs to."""
    import json

    import imageio.v3 as iio
    from lucid_app.ui.handlers import AppHandlers, OPEN_OUTPUTS

    out = tmp_path / "out"
    handlers = AppHandlers(FakeJobs(out))
    run = out / handlers.owner_of(REQUEST) / "r"
    (run / "views").mkdir(parents=True)
    (run / "config.yaml").write_text("optim:\n  steps: 40\n")
    records = [StepEvent(step=k, total_steps=40, losses={"guidance": 1.0 + k % 2, "tv_rgb": 0.0, "total": 1.0},
                         t=300.0, s=200.0, delta_t=80.0, grad_norm=1.0, guidance_scale=7.5, n_gaussians=500,
                         seconds=0.1).record() for k in range(1, 31)]
    lines = [json.dumps(r) for r in records] + [json.dumps({"step": 31, "controls": {"delta_t": 60}}),
                                                json.dumps({"step": 30, "status": "stopped", "message": "stop"})]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    for i in range(8):  # an 8-view ring: the shown ones are 0, 2, 4, 6 (front, side, back, side)
        iio.imwrite(run / "views" / f"view_{i:03d}.png", np.full((16, 16, 3), 30 * i, np.uint8))
    opened = dict(zip(OPEN_OUTPUTS, handlers.open_run("r", REQUEST)))
    assert "Stopped at step 30 / 40" in opened["status"] and "500 Gaussians" in opened["status"]
    assert opened["preview"].shape == (32, 32, 3)
    assert [opened["preview"][r, c, 0] for r, c in ((0, 0), (0, 16), (16, 0))] == [0, 60, 120]
    guidance = opened["guidance_plot"]
    assert list(guidance["step"]) == list(range(1, 31)) and set(guidance["series"]) == {"guidance (mean of last 25)"}
    assert guidance["value"].iloc[0] == 2.0 and guidance["value"].iloc[-1] == pytest.approx((12 * 2 + 13 * 1) / 25)
    raw = handlers.show_raw("guidance", True, REQUEST)
    assert set(raw["series"]) == {"guidance (mean of last 25)", "guidance (raw)"}
    assert set(handlers.show_raw("guidance", False, REQUEST)["series"]) == {"guidance (mean of last 25)"}


def test_the_app_exports_a_mesh_by_default_whatever_the_preset(tmp_path: Path) -> None:
    from lucid_app.ui.handlers import APP_EXPORTS_MESH, PRESET_FIELDS, form_overrides

    assert APP_EXPORTS_MESH is True and "export_mesh" not in PRESET_FIELDS
    assert "export.mesh=true" in form_overrides(_form(export_mesh=True))
    assert "export.mesh=false" in form_overrides(_form(export_mesh=False))


def test_preset_fills_the_form(tmp_path: Path) -> None:
    from lucid_app.ui.handlers import AppHandlers, PRESET_FIELDS

    handlers = AppHandlers(FakeJobs(tmp_path))
    values = dict(zip((*PRESET_FIELDS, "prompt"), handlers.preset_changed("paper", "")))
    assert values["resolution"] == 512 and values["steps"] == 5000
    assert handlers.preset_changed("demo", "my own prompt")[-1] == "my own prompt"


def test_status_text_per_state() -> None:
    from lucid_app.ui.handlers import status_html

    assert "No job yet" in status_html(None)
    assert "Queued — position 2" in status_html(job_view("queued", position=2))
    assert "Paused — step 1 / 10" in status_html(job_view("paused", steps=1))
    assert "&lt;b&gt;" in status_html(job_view("failed", message="<b>boom</b>"))
    # 4 of 10 steps at 0.25 s: 6 left, 1.5 s; a real model on a CPU (5 min/step) gets told it is hours away.
    assert "~2 s left" in status_html(job_view("running", steps=4)) and "CUDA GPU" not in status_html(
        job_view("running", steps=4))
    slow = job_view("running", steps=4, total_steps=5000)
    slow = replace(slow, steps=tuple(replace(e, seconds=300.0, total_steps=5000) for e in slow.steps))
    assert "~17 days left" in status_html(slow) and "CUDA GPU" in status_html(slow)


def test_buttons_show_the_state() -> None:
    from lucid_app.ui.handlers import button_states, status_html

    paused = button_states(job_view("paused", steps=2))
    assert paused["pause_toggle"].value == "Resume" and paused["pause_toggle"].interactive
    assert paused["generate"].value == "Paused · step 2 / 10" and paused["stop"].interactive
    exporting = button_states(job_view("running", steps=2, exporting="turntable", progress=(3, 12)))
    assert exporting["generate"].value == "Exporting…" and not exporting["pause_toggle"].interactive
    assert "Exporting turntable — frame 3 / 12" in status_html(job_view("running", steps=2, exporting="turntable",
                                                                     progress=(3, 12)))
    assert "Running" not in status_html(job_view("running", steps=10, exporting="mesh"))
    assert button_states(None)["generate"].interactive


def test_pause_toggle_and_queued_cancel_messages(tmp_path: Path) -> None:
    from lucid_app.ui.handlers import AppHandlers

    class Toggling(FakeJobs):
        state = "running"

        def latest(self, session):
            return job_view(self.state, steps=1, controls=ControlState(7.5, 80, 100, 2, paused=self.state == "paused"))

        def pause(self, job_id):
            self.state = "paused"

        def resume(self, job_id):
            self.state = "running"

    jobs = Toggling(tmp_path)
    handlers = AppHandlers(jobs)
    message, toggle = handlers.toggle_pause(REQUEST)
    assert message.startswith("Paused") and toggle.value == "Resume"
    message, toggle = handlers.toggle_pause(REQUEST)
    assert message == "Resumed." and toggle.value == "Pause"
    jobs.state = "queued"
    assert handlers.stop(REQUEST).startswith("Cancelled: the job left the queue")


def test_plots_show_each_loss_term_smoothed_from_the_first_step() -> None:
    from lucid_app.ui.handlers import plot_frames
    from lucid_app.ui.job_display import SMOOTH_STEPS, trailing_mean

    steps = [StepEvent(step=k, total_steps=100, losses={"total": 0.5 + k, "guidance": 0.4 + (k % 2), "tv_rgb": 0.1,
                                                        "tv_depth": 0.0, "scale": 0.0},
                       t=float(20 + (k * 37) % 480), s=float((k * 37) % 480), delta_t=80.0, grad_norm=1.0,
                       guidance_scale=7.5, n_gaussians=300, seconds=0.1) for k in range(1, 101)]
    frames = plot_frames(steps)
    guidance = frames["guidance"].set_index("step")["value"]
    # A trailing mean over the last 25 steps (fewer at the start), against numpy's own moving average.
    values = np.array([0.4 + (k % 2) for k in range(1, 101)])
    expected = np.convolve(values, np.ones(SMOOTH_STEPS) / SMOOTH_STEPS, mode="valid")
    np.testing.assert_allclose(guidance.to_numpy()[SMOOTH_STEPS - 1:], expected)
    assert guidance[1] == pytest.approx(1.4) and guidance[2] == pytest.approx(0.9)
    np.testing.assert_allclose(trailing_mean(np.array([1.0, 3.0, 5.0]), 2), [1.0, 2.0, 4.0])
    # The total is not drawn (it hid the guidance); a regulariser with weight 0 is left out.
    assert set(frames["regularisers"]["series"]) == {"tv_rgb (mean of last 25)"}
    assert "total" not in " ".join(frames["guidance"]["series"])
    # With the raw toggle, the logged values too.
    raw = plot_frames(steps, {"guidance": True})["guidance"]
    assert set(raw.series) == {"guidance (mean of last 25)", "guidance (raw)"}
    assert raw[raw.series == "guidance (raw)"]["value"].iloc[:2].tolist() == [1.4, 0.4]
    # t and s as running means from step 1 (one name from the start: the lines are drawn from the first steps on).
    schedule = frames["schedule"]
    t_mean = schedule[schedule.series == "t (mean of last 25)"]["value"]
    assert len(t_mean) == 100 and t_mean.iloc[0] == steps[0].t
    assert t_mean.iloc[30:].std() < 0.5 * np.std([e.t for e in steps])
    assert set(schedule[schedule.series == "δ_T"]["value"]) == {80.0}
    early = plot_frames(steps[:3])["schedule"]
    assert set(early.series) == {"t (mean of last 25)", "s (mean of last 25)", "δ_T"} and len(early) == 9


def test_notices_next_to_settings_the_prior_cannot_use() -> None:
    from lucid_app.app.model_registry import default_registry
    from lucid_app.ui.notices import setting_notices

    models = default_registry().refs()
    negative, perp_neg = setting_notices("", "demo", PAPER_NEGATIVE, False, models)
    assert "ignores this negative prompt" in negative and "a red toy car" in negative and perp_neg == ""
    assert setting_notices("offline-demo", "paper", PAPER_NEGATIVE, False, models)[0] == negative
    assert setting_notices("", "demo", "a snowman", False, models)[0] == ""  # a caption is understood
    assert setting_notices("", "demo", "", False, models)[0] == ""
    # A name that is not the server's gets no notice, and is never read as a path.
    assert setting_notices("multiview:assets/demo", "demo", PAPER_NEGATIVE, False, models)[0] == ""


def test_slider_spans_lie_within_the_schemas_bounds() -> None:
    from lucid_app.config import GuidanceConfig
    from lucid_app.config.coerce import field_bounds
    from lucid_app.ui.form import SLIDER_RANGES

    for name, (low, high) in SLIDER_RANGES.items():
        lowest, highest = field_bounds(GuidanceConfig, name)
        assert lowest <= low < high <= highest, name
    assert field_bounds(GuidanceConfig, "guidance_scale") == (0.0, 1000.0)


# ---------------------------------------------------------------------------------------------- Stop hands back control


def test_a_stopped_run_hands_back_control_once_its_model_is_written(tmp_path: Path) -> None:
    """Issue 27: after Stop the stream ends as soon as model.ply exists (the rest of the export goes on in the
    background), with Generate enabled in its very last update only."""
    from lucid_app.ui.handlers import AppHandlers, GENERATE_OUTPUTS

    run = tmp_path / "s" / "r"
    run.mkdir(parents=True)
    (run / "model.ply").write_bytes(b"ply")
    exporting = dict(state="exporting", steps=3, outcome="stopped", detached=True, run_dir=run)
    script = [
        job_view("running", steps=3, version=1),
        job_view(version=2, exporting="model.ply", **exporting),
        job_view(version=3, exporting="turntable", progress=(0, 40), files={"ply": str(run / "model.ply")},
                 **exporting),
    ]
    handlers = AppHandlers(FakeJobs(tmp_path, script), stream_interval_s=0.0)
    outputs = [dict(zip(GENERATE_OUTPUTS, out)) for out in handlers.generate(**_form(), request=REQUEST)]
    assert [o["job"]["state"] for o in outputs] == ["running", "exporting", "exporting", "exporting"]
    assert not outputs[1]["generate"].interactive, "no model.ply yet: the stream goes on"
    assert (outputs[-2]["generate"].value, outputs[-2]["generate"].interactive) == ("Finishing…", False)
    assert outputs[-1]["generate"].interactive and outputs[-1]["generate"].value == "Generate"
    assert not outputs[-1]["stop"].interactive and "Generate is free again" in outputs[-1]["status"]


class ExportingJobs(FakeJobs):
    """A job manager whose caller has ``view`` exporting in the background (None: nothing)."""

    def __init__(self, outputs: Path, view: JobView | None) -> None:
        super().__init__(outputs)
        self.view = view

    def background_export(self, session):
        self.calls.append(("background_export", session))
        return self.view

    def latest(self, session):
        return self.view or job_view()

    def skip_export(self, job_id):
        self.calls.append(("skip_export", job_id))


def test_background_export_row_and_skip(tmp_path: Path) -> None:
    import gradio as gr
    import imageio.v3 as iio
    from lucid_app.ui.handlers import EXPORT_ROW_OUTPUTS, AppHandlers

    busy = job_view("exporting", steps=3, outcome="stopped", detached=True, exporting="turntable", progress=(7, 40))
    handlers = AppHandlers(ExportingJobs(tmp_path, busy))
    row = dict(zip(EXPORT_ROW_OUTPUTS, handlers.export_row(None, REQUEST)))
    assert "frame 7 / 40" in row["export_row"] and "a snowman" in row["export_row"] and row["skip_export"].visible
    assert all(row[name] == gr.skip() for name in EXPORT_ROW_OUTPUTS[2:-1]) and row["shown_export"] is None
    assert ("background_export", handlers.owner_of(REQUEST)) in handlers.jobs.calls, "the caller's own owner id"
    assert handlers.skip_export(REQUEST).startswith("Export skipped")
    assert handlers.jobs.calls[-1] == ("skip_export", "j1")

    # The export ended and the run is still the caller's newest: its status, final views, mesh and downloads (served
    # copies), then its splat.
    run = tmp_path / handlers.owner_of(REQUEST) / "r"
    (run / "views").mkdir(parents=True)
    for name in ("model.ply", "model_view.ply", "mesh.glb", "turntable.mp4"):
        (run / name).write_bytes(name.encode())
    for i in range(4):
        iio.imwrite(run / "views" / f"view_{i:03d}.png", np.full((8, 8, 3), 40 * i, np.uint8))
    files = {"ply": str(run / "model.ply"), "view_ply": str(run / "model_view.ply"), "mesh": str(run / "mesh.glb"),
             "video": str(run / "turntable.mp4")}
    done = replace(busy, state="done", message="stopped at step 3", files=files, run_dir=run)
    handlers = AppHandlers(ExportingJobs(tmp_path, done))
    first = dict(zip(EXPORT_ROW_OUTPUTS, handlers.export_row(None, REQUEST)))
    assert "Past runs" in first["export_row"] and not first["skip_export"].visible
    assert first["shown_export"]["job"] == "j1" and "Stopped" in first["status"]
    assert first["preview"].shape == (16, 16, 3), "the final views, tiled as the live preview"
    assert Path(first["mesh3d"]).read_bytes() == b"mesh.glb" and not Path(first["mesh3d"]).is_relative_to(tmp_path)
    assert first["model3d"] == gr.skip() and first["dl_mesh"].visible
    later = dict(zip(EXPORT_ROW_OUTPUTS, handlers.export_row({**first["shown_export"], "splat_at": 0.0}, REQUEST)))
    assert Path(later["model3d"]).read_bytes() == b"model_view.ply" and later["mesh3d"] == gr.skip()
    assert later["shown_export"]["splat_at"] is None
    again = dict(zip(EXPORT_ROW_OUTPUTS, handlers.export_row(later["shown_export"], REQUEST)))
    assert all(again[name] == gr.skip() for name in EXPORT_ROW_OUTPUTS[2:-1]), "shown once"
    nothing = dict(zip(EXPORT_ROW_OUTPUTS, AppHandlers(ExportingJobs(tmp_path, None)).export_row(None, REQUEST)))
    assert nothing["export_row"] == "" and not nothing["skip_export"].visible


def test_buttons_while_exporting() -> None:
    from lucid_app.ui.handlers import button_states

    finished_run = button_states(job_view("exporting", steps=10, outcome="done", exporting="turntable"))
    assert finished_run["generate"].value == "Exporting…" and not finished_run["generate"].interactive
    stopped = job_view("exporting", steps=3, outcome="stopped", exporting="turntable", files={"ply": "model.ply"})
    assert button_states(stopped)["generate"].interactive and not button_states(stopped)["stop"].interactive


def test_interrupted_runs_are_listed_and_resumed_for_their_owner_only(tmp_path: Path) -> None:
    import gradio as gr
    from lucid_app.ui.handlers import AppHandlers, GENERATE_OUTPUTS

    class Resuming(FakeJobs):
        def active_run_dirs(self):
            return []

        def resume_run(self, run_dir, session=""):
            self.calls.append(("resume_run", Path(run_dir).name, session))
            return self.script.pop(0)

    out = tmp_path / "out"
    jobs = Resuming(out, [job_view("done", steps=6, outcome="done", resumed=True)])
    handlers = AppHandlers(jobs, stream_interval_s=0.0, shared_runs=True)
    mine = handlers.owner_of(REQUEST)
    other = handlers.owner_of(SimpleNamespace(session_hash="sess-b"))
    for owner, name, last in ((mine, "r1", '{"step": 3, "loss_total": 1.0}'),
                              (mine, "r2", '{"step": 6, "status": "done", "message": ""}'),
                              (other, "r3", '{"step": 3, "loss_total": 1.0}')):
        run = out / owner / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("prompt:\n  text: a snowman\n")
        (run / "checkpoint.pt").write_bytes(b"state")
        (run / "metrics.jsonl").write_text(last + "\n")
    # Even with --shared-runs (which lists other owners' runs for viewing) only the caller's own are offered.
    assert handlers.interrupted_choices(REQUEST).choices == [("r1 — a snowman", "r1")]
    outputs = list(handlers.resume_run("r1", REQUEST))
    assert ("resume_run", "r1", mine) in jobs.calls
    assert dict(zip(GENERATE_OUTPUTS, outputs[-1]))["job"]["state"] == "done"
    for bad in ("r2", f"{other}/r3", "r3", f"../{other}/r3", ""):
        with pytest.raises(gr.Error):
            list(handlers.resume_run(bad, REQUEST))


def test_the_lists_a_page_load_asks_for_are_not_queued_one_at_a_time(tmp_path: Path) -> None:
    """Fifteen visitors opening the page at once (bench/session_load.py) must not wait behind each other's run
    lists: the read-only page-load events have no concurrency limit."""
    from lucid_app.ui.layout import build_demo

    demo = build_demo(FakeJobs(tmp_path))
    names = {"runs_choices", "interrupted_choices"}
    limits = {fn.name: fn.concurrency_limit for fn in demo.fns.values() if fn.name in names}
    assert set(limits) == names and all(limit is None for limit in limits.values()), limits
