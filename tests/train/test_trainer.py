"""The training loop: short CPU runs on the multi-view prior and a tiny Stable Diffusion, controls, resume,
non-finite steps and the run folder."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lucid_app.config import TrainConfig, apply_overrides
from lucid_app.train.controls import ControlState, LiveControls
from lucid_app.train.events import DoneEvent, PreviewEvent, StepEvent
from lucid_app.io.ply import read_gaussian_ply
from lucid_app.train import outputs as train_outputs
from lucid_app.priors import load_prior
from lucid_app.train.trainer import Trainer, initial_controls
from tests.helpers import TRAIN_SIZE, params, tiny_config



def run(config: TrainConfig, run_dir: Path | None = None, **kwargs) -> tuple[Trainer, list, DoneEvent]:
    prior = load_prior(config.model.id, config.model)
    trainer = Trainer(config, prior, run_dir=run_dir, **kwargs)
    events: list = []
    done = trainer.run(events.append)
    return trainer, events, done


def test_multiview_run_emits_events_changes_parameters_and_writes_files(chair: str, tmp_path: Path) -> None:
    config = tiny_config(chair)
    prior = load_prior(config.model.id, config.model)
    trainer = Trainer(config, prior, run_dir=tmp_path / "run")
    before = params(trainer)
    events: list = []
    done = trainer.run(events.append)
    steps = [e for e in events if isinstance(e, StepEvent)]
    previews = [e for e in events if isinstance(e, PreviewEvent)]
    assert [e.step for e in steps] == list(range(1, 7))
    # After step 1 (small), then every preview_every = 2 steps (and every few seconds, which these steps never take).
    assert {1, 2, 4, 6} <= {p.step for p in previews} and previews[0].step == 1
    assert previews[0].images.shape == (4, train_outputs.PREVIEW_FIRST_SIZE_PX, train_outputs.PREVIEW_FIRST_SIZE_PX, 3)
    assert previews[1].images.shape[1] == train_outputs.PREVIEW_SIZE_PX and previews[0].images.dtype == np.uint8
    assert isinstance(events[-1], DoneEvent) and done.status == "done" and done.step == 6
    assert any(e.densify for e in steps), "densification was scheduled at steps 2 and 4"
    after = params(trainer)
    assert not torch.equal(before["sh_dc"][: after["sh_dc"].shape[0]], after["sh_dc"]) or \
        before["means"].shape != after["means"].shape
    for name in ("model.ply", "turntable.mp4", "config.yaml", "metrics.jsonl", "checkpoint.pt", "views/view_000.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert read_gaussian_ply(tmp_path / "run" / "model.ply").count == trainer.gaussians.count
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss_total" in r] == list(range(1, 7))
    assert records[-1] == {"step": 6, "status": "done", "message": ""}


def test_equal_seeds_give_identical_runs(chair: str) -> None:
    a, _, _ = run(tiny_config(chair, steps=5))
    b, _, _ = run(tiny_config(chair, steps=5))
    c, _, _ = run(tiny_config(chair, steps=5, extra=("seed=1",)))
    for name, value in params(a).items():
        assert torch.equal(value, params(b)[name]), name
    assert not torch.equal(params(a)["means"], params(c)["means"])


def test_camera_conditioned_prior_gets_each_steps_camera_directions(chair: str) -> None:
    config = tiny_config(chair, steps=2, extra=("model.multiview_camera_sigma_deg=10",))
    prior = load_prior(config.model.id, config.model)
    seen: list[torch.Tensor] = []
    original = prior.predict_noise

    def recording(x_t, t, cond, control=None):  # noqa: ANN001, ANN202
        seen.append(control)
        return original(x_t, t, cond, control)

    prior.predict_noise = recording
    trainer = Trainer(config, prior)
    trainer.train_step()
    assert seen and all(c is not None and c.shape[-1] == 3 for c in seen)
    torch.testing.assert_close(seen[-1].norm(dim=-1), torch.ones(seen[-1].shape[0]))


def test_tiny_stable_diffusion_run(tiny_sd_dir, tmp_path: Path) -> None:  # noqa: ANN001
    config = tiny_config(str(tiny_sd_dir), steps=4, extra=("prompt.text=a cat", "guidance.perp_neg=true"))
    trainer, events, done = run(config, tmp_path / "sd")
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert done.status == "done" and len(steps) == 4
    assert all(np.isfinite(e.losses["total"]) and e.grad_norm > 0 for e in steps)
    assert all(p.grad is None for p in trainer.prior.unet.parameters())
    assert (tmp_path / "sd" / "model.ply").is_file()


def test_controls_from_another_thread_take_effect_by_the_next_step(chair: str, tmp_path: Path) -> None:
    config = tiny_config(chair, steps=8)
    controls = LiveControls(initial_controls(config))
    seen: list[StepEvent] = []

    def on_event(event: object) -> None:
        if isinstance(event, StepEvent):
            seen.append(event)
            if event.step == 3:
                worker = threading.Thread(target=controls.update, kwargs={"guidance_scale": 20.0, "delta_t": 10,
                                                                          "delta_t_start": 10})
                worker.start()
                worker.join()
            if event.step == 5:
                controls.stop()

    prior = load_prior(config.model.id, config.model)
    done = Trainer(config, prior, run_dir=tmp_path / "run", controls=controls).run(on_event)
    assert [e.guidance_scale for e in seen] == [7.5, 7.5, 7.5, 20.0, 20.0]
    assert [e.delta_t for e in seen][3:] == [10.0, 10.0]
    assert done.status == "stopped" and done.step == 5
    assert (tmp_path / "run" / "model.ply").is_file() and (tmp_path / "run" / "turntable.mp4").is_file()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    change = next(r for r in records if "controls" in r)
    assert change["step"] == 4 and change["controls"]["guidance_scale"] == 20.0


def test_pause_holds_until_resume(chair: str) -> None:
    config = tiny_config(chair, steps=3)
    controls = LiveControls(initial_controls(config))
    steps_seen: list[int] = []
    resumed_after = threading.Event()

    def on_event(event: object) -> None:
        if isinstance(event, StepEvent):
            steps_seen.append(event.step)
            if event.step == 1:
                controls.pause()
                threading.Timer(0.5, lambda: (resumed_after.set(), controls.resume())).start()
            elif event.step == 2:
                assert resumed_after.is_set(), "step 2 ran while paused"

    prior = load_prior(config.model.id, config.model)
    done = Trainer(config, prior, controls=controls).run(on_event)
    assert done.status == "done" and steps_seen == [1, 2, 3]


def test_resume_continues_bit_identically(chair: str, tmp_path: Path) -> None:
    straight, _, _ = run(tiny_config(chair, steps=6))
    config = tiny_config(chair, steps=6)
    controls = LiveControls(initial_controls(config))

    def stop_at_3(event: object) -> None:
        if isinstance(event, StepEvent) and event.step == 3:
            controls.stop()

    prior = load_prior(config.model.id, config.model)
    first = Trainer(config, prior, run_dir=tmp_path / "run", controls=controls)
    assert first.run(stop_at_3).status == "stopped"
    resumed = Trainer.resume(tmp_path / "run", prior)
    assert resumed.step == 3
    optimizer_before = resumed.gaussians.optimizer.state_dict()
    assert optimizer_before["state"], "Adam moments were restored"
    done = resumed.run()
    assert done.status == "done" and done.step == 6
    for name, value in params(straight).items():
        assert torch.equal(value, params(resumed)[name]), name
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss_total" in r] == list(range(1, 7))


def test_repeated_non_finite_steps_end_the_run_and_keep_the_last_good_state(
    chair: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(chair, steps=10, extra=("optim.max_bad_steps=3", "densify.enabled=false"))
    prior = load_prior(config.model.id, config.model)
    trainer = Trainer(config, prior, run_dir=tmp_path / "run")
    real = trainer.guidance

    def poisoned(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = real(*args, **kwargs)
        if trainer.step + 1 >= 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer, "guidance", poisoned)
    events: list = []
    done = trainer.run(events.append)
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.skipped for e in steps] == [False, False, True, True, True]
    assert done.status == "failed" and "3 consecutive steps" in done.message
    good = read_gaussian_ply(tmp_path / "run" / "model.ply")
    assert np.isfinite(good.means).all() and good.count == 200
    np.testing.assert_array_equal(good.means, trainer.gaussians.to_raw().means)


def test_a_single_non_finite_step_is_skipped_and_training_continues(
    chair: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(chair, steps=4, extra=("densify.enabled=false",))
    prior = load_prior(config.model.id, config.model)
    trainer = Trainer(config, prior)
    real = trainer.guidance
    snapshot: dict[str, torch.Tensor] = {}

    def once(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = real(*args, **kwargs)
        if trainer.step + 1 == 2:
            snapshot.update(params(trainer))
            out.loss = out.loss + float("inf")
        return out

    monkeypatch.setattr(trainer, "guidance", once)
    first, second = trainer.train_step(), trainer.train_step()
    assert not first.skipped and second.skipped
    for name, value in snapshot.items():
        assert torch.equal(value, params(trainer)[name]), f"{name} changed on a skipped step"
    assert not trainer.train_step().skipped and trainer.step == 3


def test_initial_controls_come_from_the_config() -> None:
    config = apply_overrides(TrainConfig(), ["guidance.guidance_scale=5", "guidance.delta_t=20"])
    assert initial_controls(config) == ControlState(guidance_scale=5.0, delta_t=20, delta_t_start=100,
                                                    preview_every=50)


def checkpoint_steps(trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the step of every checkpoint ``trainer`` writes."""
    steps: list[int] = []
    real = trainer.save_checkpoint

    def spy() -> Path | None:
        steps.append(trainer.step)
        return real()

    monkeypatch.setattr(trainer, "save_checkpoint", spy)
    return steps


def test_keyboard_interrupt_between_steps_resumes_bit_identically(chair: str, tmp_path: Path) -> None:
    straight, _, _ = run(tiny_config(chair, steps=6))
    config = tiny_config(chair, steps=6)
    prior = load_prior(config.model.id, config.model)

    def ctrl_c_at_4(event: object) -> None:
        if isinstance(event, StepEvent) and event.step == 4:
            raise KeyboardInterrupt

    done = Trainer(config, prior, run_dir=tmp_path / "run").run(ctrl_c_at_4)
    assert done.status == "stopped" and done.step == 4
    resumed = Trainer.resume(tmp_path / "run", prior)
    assert resumed.step == 4 and resumed.run().status == "done"
    for name, value in params(straight).items():
        assert torch.equal(value, params(resumed)[name]), name


def test_keyboard_interrupt_inside_a_step_keeps_the_last_checkpoint(
    chair: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C lands inside a step (after its random draws and densification): the checkpoint must not hold that
    half-done state, or the resumed run would differ from an uninterrupted one."""
    straight, _, _ = run(tiny_config(chair, steps=6))
    config = tiny_config(chair, steps=6)  # checkpoints every 3 steps, densification at steps 2 and 4
    prior = load_prior(config.model.id, config.model)
    trainer = Trainer(config, prior, run_dir=tmp_path / "run")
    real_step = trainer.densifier.step

    def densify_then_ctrl_c(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        report = real_step(*args, **kwargs)
        if trainer.step + 1 == 5:
            raise KeyboardInterrupt
        return report

    monkeypatch.setattr(trainer.densifier, "step", densify_then_ctrl_c)
    done = trainer.run()
    assert done.status == "stopped" and done.step == 4
    assert (tmp_path / "run" / "model.ply").is_file(), "the current Gaussians are still exported"
    resumed = Trainer.resume(tmp_path / "run", prior)
    assert resumed.step == 3, "the checkpoint keeps the last state between two steps"
    resumed.run()
    for name, value in params(straight).items():
        assert torch.equal(value, params(resumed)[name]), name


def test_checkpoints_at_the_start_every_n_steps_and_every_n_seconds(
    chair: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(chair, steps=5, extra=("export.checkpoint_every=0", "export.checkpoint_every_s=0",
                                                "densify.enabled=false"))
    prior = load_prior(config.model.id, config.model)
    trainer = Trainer(config, prior, run_dir=tmp_path / "steps_only")
    saved = checkpoint_steps(trainer, monkeypatch)
    trainer.run()
    assert saved == [0, 5], "one at the start (a kill before any other leaves a run to resume) and one at the end"

    # A clock that advances 40 s at every reading: with checkpoints every 60 s, one every other step.
    clock = iter(range(0, 10_000, 40))
    monkeypatch.setattr(train_outputs, "time", SimpleNamespace(perf_counter=time.perf_counter,
                                                                 monotonic=lambda: float(next(clock))))
    timed = Trainer(apply_overrides(config, ["export.checkpoint_every_s=60"]), prior, run_dir=tmp_path / "timed")
    saved = checkpoint_steps(timed, monkeypatch)
    timed.run()
    assert saved == [0, 2, 4, 5]
    assert TrainConfig().export.checkpoint_every_s == 60.0, "a kill loses at most about a minute by default"


def test_a_new_run_starts_its_metrics_empty(chair: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 9, "status": "done", "message": "an older run"}\n')
    run(tiny_config(chair, steps=2, extra=("densify.enabled=false",)), run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if "status" in r] == [{"step": 2, "status": "done", "message": ""}]


@pytest.mark.parametrize(("anneal", "expected"), [(0, 6), (40, 40)])
def test_sdi_anneals_over_the_run_unless_told_otherwise(
    chair: str, monkeypatch: pytest.MonkeyPatch, anneal: int, expected: int
) -> None:
    config = tiny_config(chair, steps=6, extra=("guidance.method=sdi", f"guidance.sdi_anneal_steps={anneal}"))
    trainer = Trainer(config, load_prior(config.model.id, config.model))
    seen: list[int] = []
    real = trainer.guidance

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the Guidance signature, passed through
        seen.append(args[5].sdi_anneal_steps)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "guidance", spy)
    trainer.train_step()
    assert seen == [expected]


# ------------------------------------------------------------------ one step path, the extension point, the export


def test_a_step_alone_and_a_step_in_run_take_the_same_path(chair: str, tmp_path: Path) -> None:
    """Controls changed before a step are adopted and recorded whether the step runs in ``run`` or alone."""
    config = tiny_config(chair, steps=1, extra=("densify.enabled=false",))
    prior = load_prior(config.model.id, config.model)
    alone = Trainer(config, prior)
    alone.controls.update(guidance_scale=11.0)
    assert alone.train_step().guidance_scale == 11.0
    assert [(c.step, c.guidance_scale) for c in alone.control_schedule] == [(1, 11.0)]

    in_run = Trainer(config, prior, run_dir=tmp_path / "run")
    in_run.controls.update(guidance_scale=11.0)
    in_run.run()
    assert [(c.step, c.guidance_scale) for c in in_run.control_schedule] == [(1, 11.0)]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 1, "controls": {"guidance_scale": 11.0}} in records
    for name, value in params(alone).items():  # one step each, same seed and controls: the same state
        assert torch.equal(value, params(in_run)[name]), name


def test_step_objective_is_the_one_extension_point(chair: str) -> None:
    """A subclass that overrides only ``step_objective`` changes what is fitted, and nothing else of the loop."""
    from lucid_app.guidance import GuidanceOutput
    from lucid_app.train.trainer import StepObjective

    config = tiny_config(chair, steps=3, extra=("densify.enabled=false",))
    seen: list[tuple[int, tuple[int, ...]]] = []

    class Fixed(Trainer):
        def step_objective(self, k: int, snap: ControlState) -> StepObjective:
            cams = super().step_objective(k, snap).cameras

            def loss(image: torch.Tensor) -> GuidanceOutput:
                seen.append((k, tuple(image.shape)))
                return GuidanceOutput(loss=image.square().sum(), grad=2 * image.detach(),
                                      diagnostics={"t": 1.0, "s": 0.0, "delta_t": 1.0, "grad_norm": 1.0})

            return StepObjective(cameras=cams, loss=loss)

    trainer = Fixed(config, load_prior(config.model.id, config.model))
    events = [trainer.train_step() for _ in range(3)]
    assert [k for k, _ in seen] == [1, 2, 3] and seen[0][1] == (2, TRAIN_SIZE, TRAIN_SIZE, 3)
    assert [e.t for e in events] == [1.0, 1.0, 1.0] and all(e.losses["guidance"] > 0 for e in events)


def test_training_ends_before_the_export_and_skip_export_keeps_the_model(chair: str, tmp_path: Path) -> None:
    """``TrainedEvent`` comes after the last step and before the export; a skip during the turntable leaves
    model.ply and the checkpoint, and no turntable or mesh (views taken from frames already rendered stay)."""
    from lucid_app.train.events import ExportEvent, TrainedEvent

    config = tiny_config(chair, steps=3, extra=("densify.enabled=false", "export.turntable_frames=12",
                                                "export.mesh=true"))
    controls = LiveControls(initial_controls(config))
    kinds: list[str] = []

    def on_event(event: object) -> None:
        kinds.append(type(event).__name__)
        if isinstance(event, ExportEvent) and event.stage == "turntable" and event.done >= 4:
            controls.skip_export()

    done = Trainer(config, load_prior(config.model.id, config.model), run_dir=tmp_path / "run",
                   controls=controls).run(on_event)
    trained = kinds.index(TrainedEvent.__name__)
    assert kinds[trained - 1] == "StepEvent" and kinds[trained + 1] == "ExportEvent" and kinds[-1] == "DoneEvent"
    assert done.status == "done" and "export skipped" in done.message
    run_dir = tmp_path / "run"
    assert (run_dir / "model.ply").is_file() and (run_dir / "checkpoint.pt").is_file()
    assert not (run_dir / "turntable.mp4").exists() and not (run_dir / "mesh.glb").exists()
    assert not list(run_dir.glob(".turntable*")), "the unfinished video left nothing behind"
    assert set(done.files) == {"config", "metrics", "checkpoint", "ply", "view_ply"}


def test_views_come_from_the_turntable_when_its_first_ring_passes_their_cameras(chair: str, tmp_path: Path) -> None:
    """8 frames on one ring hold the 4 eval cameras: the views are those frames, equal to separate renders."""
    import imageio.v3 as iio

    from lucid_app.train.export_run import views_from_turntable

    assert views_from_turntable(24, 1, 8) and views_from_turntable(32, 2, 8) and views_from_turntable(17, 2, 3)
    assert not views_from_turntable(24, 2, 8) and not views_from_turntable(4, 1, 8)
    config = tiny_config(chair, steps=2, extra=("densify.enabled=false", "export.eval_views=4",
                                                "export.turntable_rings=1"))
    trainer, _, _ = run(config)
    views = {}
    for frames in (8, 6):  # 8: taken from the turntable; 6: rendered on their own
        trainer.config = apply_overrides(config, [f"export.turntable_frames={frames}"])
        trainer.run_dir = tmp_path / f"frames{frames}"
        files = trainer.export()
        assert Path(files["video"]).is_file()
        views[frames] = [iio.imread(trainer.run_dir / "views" / f"view_{i:03d}.png") for i in range(4)]
    for reused, rendered in zip(views[8], views[6], strict=True):
        assert np.abs(reused.astype(int) - rendered.astype(int)).max() <= 1
