"""Live negative-prompt and Perp-Neg changes (issue #8): atomic swaps, the step they act from, metrics, the schedule
in ``config.yaml``, replay, resume and ``JobManager.set_prompt``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lucid_app.config import ConfigError, ModelConfig, PromptChange, PromptConfig, TrainConfig, from_yaml
from lucid_app.train.controls import ControlState, LiveControls
from lucid_app.train.events import StepEvent
from lucid_app.app.jobs import JobManager
from lucid_app.app.job_board import JobView
from lucid_app.config.negatives import negative_text
from lucid_app.priors import load_prior
from lucid_app.train.prompt_changes import (
    CHANGE_FIELDS,
    apply_change,
    check_changes,
    diff_states,
    encode_change,
    initial_prompt_state,
    record_change,
    request_change,
)
from lucid_app.app.run_folders import JobError
from lucid_app.train.trainer import Trainer, initial_controls
from tests.helpers import TRAIN_SIZE, params, tiny_config

WAIT_S = 30.0
# A negative the multi-view prior understands (the chair's back views), unlike tiny_config's empty one.
BACK = "a red chair, back view"


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def recorded_schedule(run_dir: Path) -> tuple[PromptChange, ...]:
    return from_yaml((run_dir / "config.yaml").read_text()).prompt_schedule


class ThreadRecordingPrior:
    """Delegates to a prior and records which thread called ``encode_prompts`` with which texts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.encodes: list[tuple[int, tuple[str, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        self.encodes.append((threading.get_ident(), tuple(texts)))
        return self.inner.encode_prompts(texts)


class VersionedPrior(ThreadRecordingPrior):
    """A multi-view prior on which the negative prompt ``"version N"`` encodes N in its image weights (weight N + 1
    on the first image, 1 on the others), so a step's negative embedding says which change it came from."""

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            if text.startswith("version "):
                row = torch.ones(self.inner.num_images)
                row[0] = 1.0 + int(text.split()[1])
                rows.append(row)
            else:
                rows.append(self.inner.encode_prompts([text])[0])
        return torch.stack(rows).to(self.inner.device)


def versioned_settings(version: int) -> dict[str, object]:
    """Negative prompt and Perp-Neg settings that all encode ``version`` (decoded by :func:`decode_versions`)."""
    return {"negative": f"version {version}", "perp_neg_weight": -2.0 - version / 1000,
            "front_decay": 2.0 + version / 1000, "side_decay": 10.0 + version / 1000}


def decode_versions(negative: torch.Tensor, config: Any) -> tuple[int, int, int, int]:
    """The version each of (negative embedding, perp_neg_weight, front_decay, side_decay) comes from."""
    return (round(float(negative[0, 0] / negative[0, 1]) - 1.0), round((-2.0 - config.perp_neg_weight) * 1000),
            round((config.front_decay - 2.0) * 1000), round((config.side_decay - 10.0) * 1000))


def record_guidance(trainer: Trainer, seen: list[tuple[int, torch.Tensor, Any]],
                    hook: Any = None) -> None:
    """Wrap ``trainer.guidance`` to record (step, negative embedding, guidance config) of every call."""
    real = trainer.guidance

    def recording(prior, x0, azimuth_deg, prompts, step, config, generator, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append((step, prompts.negative.clone(), config))
        if hook is not None:
            hook(step)
        return real(prior, x0, azimuth_deg, prompts, step, config, generator, **kwargs)

    trainer.guidance = recording


def change_in_thread(controls: LiveControls, prior: Any, **changes: object) -> PromptChange:
    """``request_change`` from a thread other than the training thread; returns its result."""
    out: list[PromptChange] = []
    worker = threading.Thread(target=lambda: out.append(request_change(controls, prior, check_changes(**changes))))
    worker.start()
    worker.join()
    return out[0]


# ---------------------------------------------------------------------------------------------- pure pieces


def test_apply_change_swaps_only_the_changed_pieces_and_diff_finds_them(chair: str) -> None:
    prior = load_prior(chair, ModelConfig(id=chair, multiview_resolution=TRAIN_SIZE))
    config = tiny_config(chair)
    state = initial_prompt_state(prior, config.prompt, config.guidance)
    change = PromptChange(step=4, negative=BACK, side_suffix=", side view", back_suffix=", seen from behind",
                          perp_neg=True, side_decay=7.0)
    new = apply_change(state, encode_change(prior, config.prompt, change))
    assert torch.equal(new.embeddings.negative, prior.encode_prompts([BACK]))
    assert torch.equal(new.embeddings.views[:2], state.embeddings.views[:2]), "unchanged suffixes keep their rows"
    assert torch.equal(new.embeddings.views[2:], prior.encode_prompts(["a red chair, seen from behind"]))
    assert torch.equal(new.embeddings.base, state.embeddings.base)
    assert (new.prompt.negative, new.prompt.back_suffix, new.perp_neg, new.side_decay, new.perp_neg_weight) == (
        BACK, ", seen from behind", True, 7.0, -2.0)
    assert new.guidance(config.guidance).perp_neg and new.guidance(config.guidance).side_decay == 7.0
    # side_suffix equals the value in force: not a change.
    assert diff_states(state, new, 4) == PromptChange(step=4, negative=BACK, back_suffix=", seen from behind",
                                                      perp_neg=True, side_decay=7.0)
    assert diff_states(new, new, 5) is None
    with pytest.raises(ValueError, match="not encoded its prompts"):
        apply_change(None, encode_change(prior, config.prompt, change))


def test_record_change_replaces_the_entry_of_its_step_and_keeps_order() -> None:
    schedule = (PromptChange(step=2, negative="a"), PromptChange(step=8, perp_neg=True))
    assert record_change(schedule, 5, PromptChange(step=5, front_decay=1.0)) == (
        schedule[0], PromptChange(step=5, front_decay=1.0), schedule[1])
    assert record_change(schedule, 8, PromptChange(step=8, negative="b")) == (
        schedule[0], PromptChange(step=8, negative="b"))
    assert record_change(schedule, 2, None) == (schedule[1],)


def test_check_changes_validates_names_values_and_library_references() -> None:
    assert check_changes(negative="@short", perp_neg=True, front_decay=3, side_decay=None) == {
        "negative": negative_text("@short"), "perp_neg": True, "front_decay": 3.0}
    with pytest.raises(ValueError, match="unknown prompt setting 'negativ'; valid: " + ", ".join(CHANGE_FIELDS)):
        check_changes(negativ="blurry")
    with pytest.raises(ValueError, match="unknown prompt setting 'step'"):
        check_changes(step=3)
    with pytest.raises(ConfigError, match="unknown negative prompt '@nope'"):
        check_changes(negative="@nope")
    with pytest.raises(ConfigError, match="prompt change.perp_neg"):
        check_changes(perp_neg="yes")
    with pytest.raises(ValueError, match="no prompt setting to change"):
        check_changes(negative=None)


def test_update_prompt_is_one_swap_and_reports_the_step_it_acts_from(chair: str) -> None:
    prior = load_prior(chair, ModelConfig(id=chair, multiview_resolution=TRAIN_SIZE))
    controls = LiveControls(ControlState(guidance_scale=7.5, delta_t=80, delta_t_start=100, preview_every=0))
    with pytest.raises(ValueError, match="not encoded its prompts"):
        request_change(controls, prior, {"negative": BACK})
    base = initial_prompt_state(prior, PromptConfig(text="a red chair", negative=""), TrainConfig().guidance)
    first, step = controls.update_prompt(lambda _current: base)
    assert (first.version, step) == (1, 1)
    controls.begin_step(6)
    change = request_change(controls, prior, check_changes(negative=BACK, perp_neg_weight=-1.0))
    assert change == PromptChange(step=7, negative=BACK, perp_neg_weight=-1.0)
    snap = controls.snapshot()
    assert snap.prompt.version == 2 and snap.prompt.prompt.negative == BACK and snap.prompt.perp_neg_weight == -1.0
    assert torch.equal(snap.prompt.embeddings.negative, prior.encode_prompts([BACK]))


# ---------------------------------------------------------------------------------------------- in the trainer


def test_a_negative_change_from_another_thread_reaches_the_guidance_at_the_next_step(
    chair: str, tmp_path: Path
) -> None:
    seen: list[tuple[int, torch.Tensor, Any]] = []
    priors: list[ThreadRecordingPrior] = []
    trainers: list[Trainer] = []
    in_step_3, go_on = threading.Event(), threading.Event()

    def loader(model: str, config: ModelConfig, device: Any) -> ThreadRecordingPrior:
        priors.append(ThreadRecordingPrior(load_prior(model, config, device)))
        return priors[-1]

    def hold_step_3(step: int) -> None:
        if step == 3:
            in_step_3.set()
            go_on.wait(WAIT_S)

    def factory(config: TrainConfig, prior: Any, **kwargs: Any) -> Trainer:
        trainers.append(Trainer(config, prior, **kwargs))
        record_guidance(trainers[-1], seen, hold_step_3)
        return trainers[-1]

    jobs = JobManager(tmp_path / "out", "cpu", loader=loader, trainer_factory=factory).start()
    try:
        job = jobs.submit(tiny_config(chair, steps=6))
        assert in_step_3.wait(WAIT_S), "the run did not reach step 3"
        before = len(priors[0].encodes)
        change = jobs.set_prompt(job.id, negative=BACK)
        assert change == PromptChange(step=4, negative=BACK), "step 3 already took its snapshot: the change acts at 4"
        caller = threading.get_ident()
        assert priors[0].encodes[before:] and all(ident == caller for ident, _ in priors[0].encodes[before:]), \
            "the new negative is encoded in the caller's thread"
        go_on.set()
        view = finished(jobs, job.id)
    finally:
        go_on.set()
        jobs.close(timeout_s=WAIT_S)
    assert view.state == "done" and view.outcome == "done"
    unconditional, back = priors[0].inner.encode_prompts(["", BACK]).split(1)
    assert [step for step, _, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert all(torch.equal(negative, unconditional) for step, negative, _ in seen if step <= 3)
    assert all(torch.equal(negative, back) for step, negative, _ in seen if step >= 4)
    changes = [r for r in records(view.run_dir) if "prompt_change" in r]
    assert changes == [{"step": 4, "prompt_change": {"negative": BACK}}]
    assert recorded_schedule(view.run_dir) == (PromptChange(step=4, negative=BACK),)
    with pytest.raises(JobError, match="done"):
        jobs.set_prompt(job.id, negative="")


def finished(jobs: JobManager, job_id: str) -> JobView:
    view = jobs.view(job_id)
    deadline = time.monotonic() + WAIT_S
    while not view.finished and time.monotonic() < deadline:
        view = jobs.wait(job_id, view.version, 1.0)
    return view


def test_changes_every_few_milliseconds_never_mix_two_versions_in_a_step(chair: str) -> None:
    config = tiny_config(chair, steps=30, extra=("guidance.perp_neg=true", "densify.enabled=false",
                                                 "export.preview_every=0"))
    prior = VersionedPrior(load_prior(config.model.id, config.model))
    controls = LiveControls(initial_controls(config))
    trainer = Trainer(config, prior, controls=controls)
    seen: list[tuple[int, torch.Tensor, Any]] = []
    record_guidance(trainer, seen)
    stop = threading.Event()
    requested: list[PromptChange] = []

    def writer() -> None:
        version = 0
        while not stop.is_set():
            version += 1
            requested.append(request_change(controls, prior, check_changes(**versioned_settings(version))))
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        done = trainer.run()
    finally:
        stop.set()
        thread.join()
    assert done.status == "done" and [step for step, _, _ in seen] == list(range(1, 31))
    versions = [decode_versions(negative, cfg) for _, negative, cfg in seen]
    for step, decoded in enumerate(versions, start=1):
        assert len(set(decoded)) == 1, f"step {step} mixed versions {decoded}"
    used = [decoded[0] for decoded in versions]
    assert used == sorted(used) and len(set(used)) >= 3, f"the writer's changes did not interleave: {used}"
    assert [c.step for c in requested] == sorted(c.step for c in requested)
    # Every version a step used is recorded at the step it started from, with all four settings.
    schedule = {c.step: c for c in trainer.prompt_schedule}
    for step in range(2, 31):
        if used[step - 1] != used[step - 2]:
            assert schedule[step].negative == f"version {used[step - 1]}"
            assert schedule[step].side_decay == 10.0 + used[step - 1] / 1000


def test_a_fresh_run_of_the_written_config_reproduces_a_live_change(chair: str, tmp_path: Path) -> None:
    config = tiny_config(chair, steps=6, extra=("guidance.perp_neg=true",))
    prior = load_prior(config.model.id, config.model)
    controls = LiveControls(initial_controls(config))

    def change_after_3(event: object) -> None:
        if isinstance(event, StepEvent) and event.step == 3:
            assert change_in_thread(controls, prior, negative=BACK, perp_neg_weight=-1.5).step == 4

    live = Trainer(config, prior, run_dir=tmp_path / "live", controls=controls)
    live.run(change_after_3)
    expected = (PromptChange(step=4, negative=BACK, perp_neg_weight=-1.5),)
    assert recorded_schedule(tmp_path / "live") == expected

    replayed = Trainer(from_yaml((tmp_path / "live" / "config.yaml").read_text()), prior, run_dir=tmp_path / "replay")
    replayed.run()
    for name, value in params(live).items():
        assert torch.equal(value, params(replayed)[name]), name
    unchanged = Trainer(config, prior)
    unchanged.run()
    assert not torch.equal(params(live)["means"], params(unchanged)["means"]), "the change changed the result"
    change = {"step": 4, "prompt_change": {"negative": BACK, "perp_neg_weight": -1.5}}
    assert [r for r in records(tmp_path / "replay") if "prompt_change" in r] == [change]
    assert recorded_schedule(tmp_path / "replay") == expected


def test_resume_restores_the_prompt_state_and_live_changes_extend_the_schedule(chair: str, tmp_path: Path) -> None:
    config = tiny_config(chair, steps=6, extra=("guidance.perp_neg=true",))
    prior = load_prior(config.model.id, config.model)
    controls = LiveControls(initial_controls(config))

    def change_then_stop(event: object) -> None:
        if isinstance(event, StepEvent) and event.step == 2:
            change_in_thread(controls, prior, negative=BACK, front_decay=1.0)
        if isinstance(event, StepEvent) and event.step == 4:
            controls.stop()

    first = Trainer(config, prior, run_dir=tmp_path / "run", controls=controls)
    assert first.run(change_then_stop).status == "stopped"
    resumed_controls = LiveControls(initial_controls(config))
    resumed = Trainer.resume(tmp_path / "run", prior, controls=resumed_controls)
    assert resumed.step == 4
    assert (resumed.prompt_state.prompt.negative, resumed.prompt_state.front_decay) == (BACK, 1.0)
    assert torch.equal(resumed.prompts.negative, first.prompts.negative)
    assert resumed_controls.snapshot().prompt is resumed.prompt_state

    def change_after_5(event: object) -> None:
        if isinstance(event, StepEvent) and event.step == 5:
            assert change_in_thread(resumed_controls, prior, perp_neg=False).step == 6

    assert resumed.run(change_after_5).status == "done"
    expected = (PromptChange(step=3, negative=BACK, front_decay=1.0), PromptChange(step=6, perp_neg=False))
    assert recorded_schedule(tmp_path / "run") == expected
    changes = [r["step"] for r in records(tmp_path / "run") if "prompt_change" in r]
    assert changes == [3, 6], "the log keeps each change once across the resume"
    straight = Trainer(from_yaml((tmp_path / "run" / "config.yaml").read_text()), prior)
    straight.run()
    for name, value in params(straight).items():
        assert torch.equal(value, params(resumed)[name]), name


# ---------------------------------------------------------------------------------------------- set_prompt errors


def test_set_prompt_errors_name_the_problem(tmp_path: Path) -> None:
    jobs = JobManager(tmp_path / "out", "cpu")  # not started: the job stays queued, with no model loaded
    job = jobs.submit(TrainConfig())
    with pytest.raises(ValueError, match="unknown prompt setting 'guidance_scale'; valid: negative, front_suffix"):
        jobs.set_prompt(job.id, guidance_scale=3.0)
    with pytest.raises(ConfigError, match="unknown negative prompt '@no_such_name'"):
        jobs.set_prompt(job.id, negative="@no_such_name")
    with pytest.raises(JobError, match="has not started training yet"):
        jobs.set_prompt(job.id, negative="@short")
    with pytest.raises(JobError, match="unknown job"):
        jobs.set_prompt("nope", negative="blurry")
    jobs.cancel(job.id)
    with pytest.raises(JobError, match="cancelled"):
        jobs.set_prompt(job.id, negative="blurry")
