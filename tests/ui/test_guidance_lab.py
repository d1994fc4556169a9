"""The guidance-lab tab: the user's negative library, inspector tasks on the job worker, A/B configs, and the
``/inspect``, ``/ab_run`` and ``/set_negative`` endpoints through ``gradio_client`` on the offline demo."""

from __future__ import annotations

import json
import threading
from inspect import signature
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

import tests.app_harness  # noqa: F401  (Gradio's environment before gradio is imported)

from lucid_app.render.cameras import sample_cameras  # noqa: E402
from lucid_app.config import (  # noqa: E402
    PAPER_NEGATIVE,
    ConfigError,
    GuidanceConfig,
    ModelConfig,
    PromptChange,
    PromptConfig,
    replace,
    to_dict,
    to_yaml,
)
from lucid_app.lab.inspector import (  # noqa: E402
    LABEL_LINE_PX,
    NEGATIVE_VARIANTS,
    InspectSettings,
    inconsistency,
    inspect_pseudo_gt,
    pseudo_gts,
)
from lucid_app.app.inspect_task import InspectRequest, run_inspect  # noqa: E402
from lucid_app.app.jobs import JobManager  # noqa: E402
from lucid_app.app.tasks import TaskContext, TaskResult  # noqa: E402
from lucid_app.config.negatives import (  # noqa: E402
    NEGATIVES_FILE,
    library_text,
    list_negatives,
    merged_negatives,
    save_negative,
)
from lucid_app.io.ply import write_gaussian_ply  # noqa: E402
from lucid_app.priors.multiview import MultiViewPrior, load_multiview_prior  # noqa: E402
from lucid_app.app.run_folders import JobError, user_negatives_path  # noqa: E402
from lucid_app.train.prepare import resolve_config  # noqa: E402
from lucid_app.guidance import GUIDANCES  # noqa: E402
from lucid_app.guidance.prompts import encode_prompt_set  # noqa: E402
from tests.app_harness import TINY_OVERRIDES, gradio_client, run_dir_named, running_app  # noqa: E402
from tests.helpers import (  # noqa: E402
    CountingLoader,
    FakeJobs,
    GatedTrainer,
    REQUEST,
    WAIT_S,
    job_config,
    job_view,
    random_gaussians,
    release_trainers,
    wait_state,
    write_object,
)

EXTRA = "\n".join(TINY_OVERRIDES)



def _tile(tile_px: int) -> int:
    """A pseudo-GT tile's height in the app's grid: enlarged by the whole factor that makes it at least
    ``INSPECT_TILE_MIN_PX`` (issue 27: the tiles were ~60 px thumbnails)."""
    from lucid_app.app.inspect_task import INSPECT_TILE_MIN_PX

    return -(-INSPECT_TILE_MIN_PX // tile_px) * tile_px

def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------------------------------------- negative library


def test_saved_negatives_go_to_the_user_library_and_merge_after_the_shipped_ones(tmp_path: Path) -> None:
    user = tmp_path / "negatives.yaml"
    shipped_before = NEGATIVES_FILE.read_bytes()
    assert merged_negatives(user) == merged_negatives(None)  # no user file yet
    save_negative("@my_dark", "  dark, gloomy  ", user)
    save_negative("cartoonish", "cartoon, flat shading", user)
    assert NEGATIVES_FILE.read_bytes() == shipped_before, "the shipped library is never written"
    assert yaml.safe_load(user.read_text()) == {"my_dark": "dark, gloomy", "cartoonish": "cartoon, flat shading"}
    library = merged_negatives(user)
    assert list(library) == [*list_negatives(), "my_dark", "cartoonish"]
    assert library_text("@my_dark", library) == "dark, gloomy"
    save_negative("my_dark", "darker", user)  # the user's own entry may be replaced
    assert merged_negatives(user)["my_dark"] == "darker"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("paper", "anything", "built-in"),
    ("@none", "anything", "built-in"),
    ("", "text", "give the new negative prompt a name"),
    ("two words", "text", "no spaces"),
    ("fine_name", "   ", "text is empty"),
])
def test_saving_a_negative_refuses_bad_names_and_empty_text(tmp_path: Path, name: str, text: str,
                                                            message: str) -> None:
    user = tmp_path / "negatives.yaml"
    with pytest.raises(ConfigError, match=message):
        save_negative(name, text, user)
    assert not user.exists()


def test_a_hand_edited_user_entry_never_shadows_a_shipped_one(tmp_path: Path) -> None:
    user = tmp_path / "negatives.yaml"
    user.write_text("paper: not the paper\nmine: my text\n")
    library = merged_negatives(user)
    assert library["paper"] == PAPER_NEGATIVE and library["mine"] == "my text"


def test_library_handlers_show_save_and_refuse_with_a_message(tmp_path: Path) -> None:
    from lucid_app.ui.guidance_handlers import GuidanceHandlers
    from lucid_app.ui.handlers import AppHandlers

    handlers = GuidanceHandlers(AppHandlers(FakeJobs(tmp_path)))
    assert handlers.negative_of("paper") == PAPER_NEGATIVE
    dropdown, message = handlers.save("soft", "soft focus")
    assert "@soft" in message and dropdown.value == "soft" and "soft" in dropdown.choices[-1]
    assert user_negatives_path(tmp_path, handlers.app.owner_of(None)).is_file()
    assert handlers.negative_of("soft") == "soft focus" and handlers.resolve_negative("@soft", None) == "soft focus"
    assert handlers.use_in_text_to_3d("@soft") == ("soft focus", "Copied to the Text-to-3D tab's negative prompt.")
    _, refused = handlers.save("paper", "x")
    assert refused.startswith("Not saved:") and "built-in" in refused


# ---------------------------------------------------------------------------------------------- pure helpers


def test_parse_int_list_and_changed_fields() -> None:
    from lucid_app.ui.guidance_handlers import changed_fields, parse_int_list

    assert parse_int_list("200, 500", "t", 0) == (200, 500)
    for text, message in (("", "at least one"), ("2x", "whole numbers"), ("0", "at least 1")):
        with pytest.raises(ConfigError, match=message):
            parse_int_list(text, "δ_T", 1)
    current = {"negative": "a", "perp_neg": False, "perp_neg_weight": -2.0, "front_suffix": ", front view"}
    wanted = {"negative": "a", "perp_neg": True, "perp_neg_weight": -2.0000000001, "front_suffix": ", from the front"}
    assert changed_fields(current, wanted) == {"perp_neg": True, "front_suffix": ", from the front"}


@pytest.mark.parametrize(("mode", "field", "values"), [
    ("negative", "prompt.negative", (PAPER_NEGATIVE, "")),
    ("method", "guidance.method", ("ism", "sds")),
    ("ism_vs_sdi", "guidance.method", ("ism", "sdi")),
    ("sds_vs_sdi", "guidance.method", ("sds", "sdi")),
    ("sdi_vs_naive", "guidance.method", ("sdi", "naive")),
])
def test_ab_configs_differ_only_in_the_chosen_field(mode: str, field: str, values: tuple) -> None:
    from lucid_app.ui.ab_run import ab_configs

    base = resolve_config("demo", "a red toy car", PAPER_NEGATIVE, None, ["seed=11", "guidance.method=sds"])
    a, b = (_flatten(to_dict(c)) for c in ab_configs(base, mode))
    assert {k for k in a if a[k] != b[k]} == {field}
    assert (a[field], b[field]) == values and a["seed"] == b["seed"] == 11
    with pytest.raises(ConfigError, match="needs a negative prompt"):
        ab_configs(resolve_config("demo", "a red toy car", ""), "negative")


def test_ab_modes_cover_every_pair_of_methods() -> None:
    from lucid_app.ui.ab_run import AB_METHOD_PAIRS, AB_MODES, ab_configs, ab_label

    pairs = {frozenset(pair) for pair in AB_METHOD_PAIRS.values()}
    assert pairs == {frozenset((a, b)) for a in GUIDANCES for b in GUIDANCES if a != b} and len(pairs) == 6
    assert set(AB_MODES) == {"negative", *AB_METHOD_PAIRS} and AB_MODES["ism_vs_sdi"] == "ISM vs SDI"
    base = resolve_config("demo", "a red toy car", PAPER_NEGATIVE)
    a, b = ab_configs(base, "sds_vs_sdi")
    assert (ab_label(a, "sds_vs_sdi"), ab_label(b, "sds_vs_sdi")) == ("SDS", "SDI")
    with pytest.raises(ConfigError, match="pick one of"):
        ab_configs(base, "ism_vs_ism")


def test_inspect_request_errors_name_the_problem(tmp_path: Path) -> None:
    from lucid_app.ui.guidance_handlers import GuidanceHandlers
    from lucid_app.ui.handlers import AppHandlers

    handlers = GuidanceHandlers(AppHandlers(FakeJobs(tmp_path)))
    args = dict(run=None, ply_file=None, prompt="a red toy car", model="", camera="orbit", azimuth_deg=0.0,
                elevation_deg=0.0, radius=4.0, timesteps="200", delta_ts="20", seeds=2, variants="both", negative="",
                request=None)
    (tmp_path / "x.ply").write_bytes(b"ply\n")
    with pytest.raises(JobError, match="Pick a past run"):
        handlers.inspect_request("run", **args)
    with pytest.raises(JobError, match="not a run name"):
        handlers.inspect_request("run", **{**args, "run": "../../etc"})
    with pytest.raises(JobError, match="Upload"):
        handlers.inspect_request("upload", **args)
    with pytest.raises(ConfigError, match="seeds"):
        handlers.inspect_request("upload", **{**args, "seeds": 0})
    write_gaussian_ply(tmp_path / "x.ply", random_gaussians(20, 0))
    with pytest.raises(ConfigError, match="unknown negative prompt"):
        handlers.inspect_request("upload", **{**args, "ply_file": str(tmp_path / "x.ply"), "negative": "@nope"})
    request = handlers.inspect_request("upload", **{**args, "ply_file": str(tmp_path / "x.ply"),
                                                    "negative": "@short", "variants": "neg"})
    assert request.negative == "unrealistic, blurry, low quality." and request.settings.negatives == ("neg",)
    assert request.config.prompt.text == "a red toy car" and request.config.model.id.startswith("multiview:")


# ---------------------------------------------------------------------------------------------- the inspector task


@pytest.fixture(scope="module")
def chair_prior(tmp_path_factory: pytest.TempPathFactory) -> MultiViewPrior:
    folder = tmp_path_factory.mktemp("lab-inspect") / "chair"
    write_object(folder, "a red chair", [(0.0, 80.0), (90.0, 80.0), (180.0, 80.0), (-90.0, 80.0)], seed=0)
    return load_multiview_prior(folder, ModelConfig(multiview_resolution=8))


def test_inspector_progress_and_negative_variants(chair_prior: MultiViewPrior) -> None:
    renders = torch.rand(1, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    calls: list[tuple[int, int]] = []
    settings = InspectSettings(timesteps=(200,), delta_ts=(20, 200), seeds=2, negatives=("noneg",))
    grid, numbers = inspect_pseudo_gt(chair_prior, renders, torch.tensor([0.0]), PromptConfig(text="a red chair"),
                                      settings=settings, progress=lambda done, total: calls.append((done, total)))
    assert list(numbers) == ["sds_t200_noneg", "sdi_t200_noneg", "ism_t200_dt20_noneg", "ism_t200_dt200_noneg"]
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)] and settings.n_rows == 4 and grid.shape[0] == 4 * 10
    # The SDI row's value is the inconsistency of SDI's own pseudo-GTs (seeds 0, 1) with the empty negative.
    prompts = encode_prompt_set(chair_prior, PromptConfig(text="a red chair", negative=""))
    x0 = chair_prior.encode_images(renders)
    sdi = pseudo_gts(chair_prior, x0, torch.tensor([0.0]), prompts, GuidanceConfig(), "sdi", 200, 0, 2)
    assert numbers["sdi_t200_noneg"] == pytest.approx(inconsistency(sdi), abs=1e-7)
    assert 0 < numbers["sdi_t200_noneg"] < numbers["sds_t200_noneg"]
    # Without the option the same rows come out as before, with and without the negative.
    _, both = inspect_pseudo_gt(chair_prior, renders, torch.tensor([0.0]), PromptConfig(text="a red chair"),
                                settings=replace(settings, negatives=NEGATIVE_VARIANTS))
    assert both["ism_t200_dt20_noneg"] == numbers["ism_t200_dt20_noneg"] and len(both) == 8
    assert both["sdi_t200_noneg"] == numbers["sdi_t200_noneg"]
    with pytest.raises(ValueError, match="negatives"):
        inspect_pseudo_gt(chair_prior, renders, torch.tensor([0.0]), PromptConfig(text="a red chair"),
                          settings=replace(settings, negatives=("maybe",)))


def test_inspect_task_on_a_run_folder_with_training_views(chair_prior: MultiViewPrior, tmp_path: Path) -> None:
    run_dir = tmp_path / "session" / "run"
    config = resolve_config("demo", "a red chair", "", None,
                            ["render.width=16", "render.height=16", "cameras.batch_size=3", "seed=4"])
    request = InspectRequest(config=config, run_dir=run_dir, camera="training",
                             settings=InspectSettings(timesteps=(200, 2000), delta_ts=(50,), seeds=2))
    progress: list[tuple[int, int]] = []
    context = TaskContext(device=torch.device("cpu"), load_prior=lambda model: chair_prior,
                          folder=tmp_path / "task", progress=lambda done, total: progress.append((done, total)))
    with pytest.raises(JobError, match="no model.ply"):
        run_inspect(request, context)
    gaussians = random_gaussians(40, 0, seed=1)
    gaussians.means *= 0.3
    gaussians.log_scales[:] = -2.5
    write_gaussian_ply(run_dir / "model.ply", gaussians)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "t": 400}\n{"step": 600, "status": "done"}\n')
    with pytest.raises(ValueError, match="t = 2000"):
        run_inspect(request, context)
    result = run_inspect(replace(request, settings=replace(request.settings, timesteps=(200,))), context)
    cameras = sample_cameras(config.cameras, 600, 16, 16, torch.Generator().manual_seed(4))
    assert result.data["azimuth_deg"] == [round(float(a), 3) for a in cameras.azimuth_deg]
    assert result.data["run"] == "run" and result.data["negative"] == ""
    assert result.data["rows"] == ["sds_t200_neg", "sds_t200_noneg", "sdi_t200_neg", "sdi_t200_noneg",
                                   "ism_t200_dt50_neg", "ism_t200_dt50_noneg"]
    sdi = result.data["by_method"]["sdi"]["t200"]["dt0"]
    assert sdi == {v: result.data["inconsistency"][f"sdi_t200_{v}"] for v in ("neg", "noneg")} and sdi["neg"] > 0
    # Labelled, each 8 px tile (+ its 2 px gap) enlarged to a readable size.
    assert result.image.dtype == np.uint8 and result.image.shape[0] == 6 * _tile(10) + 3 * LABEL_LINE_PX
    assert progress[-1] == (6, 6)
    assert json.loads(Path(result.files["json"]).read_text()) == result.data
    assert iio.imread(result.files["png"]).shape == result.image.shape


# ---------------------------------------------------------------------------------------------- task jobs


@pytest.fixture
def fake_jobs(tmp_path: Path):
    """A started manager with test_jobs' gated fake trainer (a training job runs only as far as released)."""
    GatedTrainer.started.clear()
    GatedTrainer.free_running = False
    jobs = JobManager(tmp_path / "out", "cpu", loader=CountingLoader(), trainer_factory=GatedTrainer).start()
    yield jobs
    for trainer in GatedTrainer.started:
        trainer.controls.stop()
    jobs.close(timeout_s=5)


def test_tasks_queue_behind_training_report_progress_and_stay_out_of_latest(fake_jobs: JobManager) -> None:
    train = fake_jobs.submit(job_config(steps=2), session="s1")
    wait_state(fake_jobs, train.id, "running")
    gate = threading.Event()

    def task(context: TaskContext) -> TaskResult:
        context.progress(1, 2)
        gate.wait(WAIT_S)
        context.progress(2, 2)
        return TaskResult(image=np.zeros((2, 2, 3), np.uint8), data={"x": 1.5}, message="all good")

    queued = fake_jobs.submit_task(task, job_config(), session="s1", kind="inspect")
    assert (queued.state, queued.position, queued.kind) == ("queued", 1, "inspect")
    assert fake_jobs.latest("s1").id == train.id, "live controls keep acting on the training job"
    release_trainers()
    wait_state(fake_jobs, train.id, "done")
    view = fake_jobs.view(queued.id)
    while view.progress != (1, 2):
        view = fake_jobs.wait(queued.id, view.version, WAIT_S)
    gate.set()
    done = wait_state(fake_jobs, queued.id, "done")
    assert done.progress == (2, 2) and done.data == {"x": 1.5} and done.message == "all good"
    assert done.preview.shape == (2, 2, 3)
    assert fake_jobs.latest("s1", kind="inspect").id == queued.id


def test_failing_and_stopped_tasks_end_with_their_message(fake_jobs: JobManager) -> None:
    def fails(context: TaskContext) -> TaskResult:
        raise JobError("the run has no model.ply")

    failed = wait_state(fake_jobs, fake_jobs.submit_task(fails, job_config()).id, "failed")
    assert failed.message == "the run has no model.ply"

    started = threading.Event()

    def loops(context: TaskContext) -> TaskResult:
        started.set()
        while True:
            context.progress(0, 1)

    looping = fake_jobs.submit_task(loops, job_config())
    assert started.wait(WAIT_S)
    fake_jobs.cancel(looping.id)
    stopped = wait_state(fake_jobs, looping.id, "cancelled")
    assert stopped.outcome == "stopped" and "stopped by the user" in stopped.message


# ---------------------------------------------------------------------------------------------- through gradio_client


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    with running_app(tmp_path_factory.mktemp("lab-outputs")) as handle:
        yield handle


def _tiny_run(client, steps: int = 3, preview_every: int = 0):
    return client.submit(prompt="a red toy car", negative="", preset="demo", model="", steps=steps, seed=0,
                         preview_every=preview_every, export_mesh=False, extra_overrides=EXTRA, api_name="/generate")


@pytest.mark.slow
def test_inspect_endpoint_returns_the_grid_and_the_numbers(app) -> None:
    jobs, url = app
    client = gradio_client(url)
    # Queued right behind the run it inspects: the inspector reads the run's model.ply once the run has ended.
    run = _tiny_run(client)
    next(iter(run))
    image, numbers = client.predict(
        source="latest", run=None, ply_file=None, prompt="", model="", camera="orbit", azimuth_deg=30,
        elevation_deg=10,
        radius=4.0, timesteps="200,500", delta_ts="20,200", seeds=2, variants="both", negative="a snowman",
        api_name="/inspect",
    )
    assert Path(image).is_file()
    grid = iio.imread(image)
    data = json.loads(numbers)
    assert data["negative"] == "a snowman" and data["azimuth_deg"] == [30.0] and data["seeds"] == 2
    assert len(data["inconsistency"]) == 16
    by_method = data["by_method"]
    for t in ("t200", "t500"):
        assert set(by_method["sds"][t]["dt0"]) == {"neg", "noneg"}
        for dt in ("dt20", "dt200"):
            for variant in ("neg", "noneg"):
                value = by_method["ism"][t][dt][variant]
                assert value == data["inconsistency"][f"ism_{t}_{dt}_{variant}"] and 0 <= value < 1
        assert by_method["sds"][t]["dt0"]["neg"] > 0, "SDS pseudo-GTs change with the noise seed"
        for variant in ("neg", "noneg"):
            value = by_method["sdi"][t]["dt0"][variant]
            assert (value == data["inconsistency"][f"sdi_{t}_{variant}"]
                    and 0 < value < by_method["sds"][t]["dt0"][variant])
    # 16 rows of (render + 2 seeds) tiles at the run's 32 px with a 2 px gap (enlarged), under a 3-line header.
    assert grid.shape[0] == 16 * _tile(34) + 3 * LABEL_LINE_PX and grid.shape[1] > 3 * _tile(34)
    task = jobs.latest(jobs.views()[-1].session, kind="inspect")
    # The server's inspect.json holds the model's real path; the client is shown it without server folders.
    saved = json.loads(Path(task.files["json"]).read_text())
    assert task.files["json"].endswith("inspect.json") and {**saved, "model": data["model"]} == data
    assert data["model"] == "multiview:assets/demo" != saved["model"]

    with pytest.raises(Exception, match="δ_T"):
        client.predict(source="latest", run=None, ply_file=None, prompt="", model="", camera="orbit",
                       azimuth_deg=0, elevation_deg=0, radius=4.0, timesteps="200", delta_ts="0", seeds=2,
                       variants="both", negative="", api_name="/inspect")


@pytest.mark.slow
def test_ab_run_queues_the_same_run_twice_differing_only_in_the_method(app) -> None:
    jobs, url = app
    client = gradio_client(url)
    before = {view.id for view in jobs.views()}
    status, image_a, image_b, metrics_a, metrics_b, table = client.predict(
        prompt="a potted flower", negative="", preset="demo", model="", mode="method", steps=3, seed=5,
        extra_overrides=EXTRA, api_name="/ab_run",
    )
    new = [view for view in jobs.views() if view.id not in before and view.kind == "train"]
    assert len(new) == 2 and new[0].session == new[1].session
    a, b = (_flatten(yaml.safe_load(view.config_yaml)) for view in new)
    assert {k for k in a if a[k] != b[k]} == {"guidance.method"}
    assert (a["guidance.method"], b["guidance.method"], a["seed"], a["prompt.text"]) == (
        "ism", "sds", 5, "a potted flower")
    assert (metrics_a["method"], metrics_b["method"]) == ("ism", "sds")
    assert metrics_a["state"] == metrics_b["state"] == "done" and metrics_a["step"] == metrics_b["step"] == 3
    assert Path(image_a).is_file() and Path(image_b).is_file() and "SDS" in status
    # The table: the PSNR between the two runs' final views, the training time and the prior evaluations counted.
    rows = {row[0]: row[1:] for row in table["data"]}
    assert float(rows["PSNR of the final views, A to B (dB)"][0]) > 5.0
    assert metrics_a["prior_samples"] > 0 and metrics_b["prior_samples"] > 0
    # SDS evaluates the prior on 2C samples a step (CFG), ISM on more (its inversion): the counts say so.
    assert metrics_b["prior_evals_per_view_step"] == 2.0 and metrics_a["prior_evals_per_view_step"] > 2.0
    assert rows["prior evaluations (samples)"] == [f"{metrics_a['prior_samples']:,}", f"{metrics_b['prior_samples']:,}"]


# ---------------------------------------------------------------------------------------------- live prompt changes


class PromptJobs(FakeJobs):
    """A fake manager whose latest job runs ``config``; ``set_prompt`` records the changes or raises ``error``."""

    def __init__(self, outputs: Path, config, error: Exception | None = None) -> None:
        super().__init__(outputs)
        self.config, self.error = config, error

    def latest(self, session):
        return job_view(config_yaml=to_yaml(self.config))

    def set_prompt(self, job_id, **changes):
        if self.error is not None:
            raise self.error
        self.calls.append(("set_prompt", job_id, changes))
        return PromptChange(step=7, **changes)


def test_set_negative_sends_only_what_changed_and_reports_errors_as_messages(tmp_path: Path) -> None:
    from lucid_app.ui.guidance_handlers import GuidanceHandlers, default_prompt_controls
    from lucid_app.ui.handlers import AppHandlers

    config = resolve_config("demo", "a red toy car", "@short")
    live = default_prompt_controls()
    same = {**live, "negative": "@short"}
    jobs = PromptJobs(tmp_path, config)
    handlers = GuidanceHandlers(AppHandlers(jobs))
    assert handlers.set_negative(**same, request=REQUEST).startswith("Nothing to change")
    message = handlers.set_negative(**{**same, "negative": "a snowman", "perp_neg": True, "side_decay": 4.0},
                                    request=REQUEST)
    assert jobs.calls[-1] == ("set_prompt", "j1", {"negative": "a snowman", "perp_neg": True, "side_decay": 4.0})
    assert message.startswith("From step 7:") and "'a snowman'" in message
    assert handlers.set_negative(**{**same, "negative": "@nope"}, request=REQUEST).startswith("Not applied:")
    for error in (JobError("job j1 has not started training yet"), ValueError("perp_neg_weight must be <= 0")):
        handlers = GuidanceHandlers(AppHandlers(PromptJobs(tmp_path, config, error)))
        assert handlers.set_negative(**{**same, "perp_neg": True}, request=REQUEST) == f"Not applied: {error}"
    idle = GuidanceHandlers(AppHandlers(FakeJobs(tmp_path)))
    idle.jobs.latest = lambda session: None
    assert idle.set_negative(**same, request=REQUEST).startswith("No running job")


@pytest.mark.slow
def test_set_negative_endpoint_logs_a_prompt_change_in_the_running_job(app) -> None:
    jobs, url = app
    client = gradio_client(url)
    stream = _tiny_run(client, steps=40, preview_every=0)
    reply = None
    last = None
    for out in stream:
        last = out[0]
        if reply is None and last["state"] == "running" and last["step"] >= 1:
            client.predict(api_name="/pause")  # the change lands mid-run however fast the steps are
            reply = client.predict(negative="a snowman", perp_neg=True, perp_neg_weight=-1.5, front_decay=2.0,
                                   side_decay=10.0, front_suffix=", front view", side_suffix=", side view",
                                   back_suffix=", back view", api_name="/set_negative")
            client.predict(api_name="/resume")
    assert reply and reply.startswith("From step"), reply
    assert last["state"] == "done" and last["outcome"] == "done", last
    records = [json.loads(line)
               for line in (run_dir_named(jobs, last["run"]) / "metrics.jsonl").read_text().splitlines()]
    (change,) = [r for r in records if "prompt_change" in r]
    assert change["prompt_change"] == {"negative": "a snowman", "perp_neg": True, "perp_neg_weight": -1.5}
    assert 1 < change["step"] <= 40


def test_the_lab_is_the_second_tab_and_its_endpoints_match_the_handlers(tmp_path: Path) -> None:
    from lucid_app.ui.ab_run import ABHandlers, AB_FIELDS
    from lucid_app.ui.guidance_handlers import GuidanceHandlers, PROMPT_FIELDS
    from lucid_app.ui.guidance_tab import INSPECT_FIELDS, TAB_TITLE

    from lucid_app.ui.layout import build_demo

    demo = build_demo(FakeJobs(tmp_path))
    tabs = [c["props"]["label"] for c in demo.config["components"] if c["type"] == "tabitem"]
    assert tabs == ["Text-to-3D", TAB_TITLE, "Avatar"]
    public = {dep["api_name"] for dep in demo.config["dependencies"] if dep.get("api_visibility") == "public"}
    assert {"set_negative", "inspect", "ab_run", "generate"} <= public
    params = {fn: list(signature(fn).parameters)[1:] for fn in (GuidanceHandlers.set_negative,
                                                                  GuidanceHandlers.inspect, ABHandlers.ab_run)}
    assert params[GuidanceHandlers.set_negative] == [*PROMPT_FIELDS, "request"]
    assert params[GuidanceHandlers.inspect] == [*INSPECT_FIELDS, "request", "progress"]
    assert params[ABHandlers.ab_run] == [*AB_FIELDS, "request"]


@pytest.mark.slow
def test_inspect_the_running_job_beside_training_then_a_past_run_by_name(app) -> None:
    jobs, url = app
    client = gradio_client(url)
    run = _tiny_run(client, steps=2000)
    for out in run:
        if out[0]["state"] == "running" and out[0]["step"] >= 2:
            break
    inspect = dict(ply_file=None, prompt="", model="", camera="orbit", azimuth_deg=0, elevation_deg=10, radius=4.0,
                   timesteps="200", delta_ts="50", seeds=2, variants="neg", negative="", api_name="/inspect")
    image, numbers = client.predict(source="live", run=None, **inspect)
    live = json.loads(numbers)
    view = next(v for v in reversed(jobs.views()) if v.kind == "train")
    # Answered while the run still trains (beside it, not after it), from its Gaussians at a step boundary.
    assert live["live_step"] >= 2 and not jobs.view(view.id).finished
    assert iio.imread(image).shape[0] == 3 * _tile(34) + 3 * LABEL_LINE_PX  # rows: SDS, SDI, ISM (the negative)
    assert live["rows"] == ["sds_t200_neg", "sdi_t200_neg", "ism_t200_dt50_neg"]
    assert client.predict(api_name="/stop").startswith("Stopping")
    final = [out[0] for out in run][-1]
    # Stop hands control back once model.ply is written (issue 27): the stream may end while the rest of the export
    # goes on in the background.
    assert final["state"] in ("exporting", "done") and final["outcome"] == "stopped" and "ply" in final["files"]
    assert final["run"]
    # A past run by its name, straight from the API (no browser has filled the tab's run list).
    _, numbers = client.predict(source="run", run=final["run"], **inspect)
    assert json.loads(numbers)["run"] == Path(final["run"]).name
    with pytest.raises(Exception, match="is not a run name"):
        client.predict(source="run", run="../../etc", **inspect)
