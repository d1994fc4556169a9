"""The guidance lab's "Check this model" panel (``/doctor``): the prior doctor on a model of the server's list, as a
job task; its request checks every value; its result is the doctor's own numbers, and the verdict is remembered."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import tests.app_harness  # noqa: F401  (Gradio's environment before gradio is imported)
from lucid_app.app.doctor_task import DoctorRequest, run_doctor  # noqa: E402
from lucid_app.app.tasks import TaskContext  # noqa: E402
from lucid_app.config import ConfigError, TrainConfig, apply_overrides  # noqa: E402
from lucid_app.lab.doctor.measure import DoctorSettings  # noqa: E402
from lucid_app.lab.doctor.verdicts import known_verdict  # noqa: E402
from lucid_app.priors import load_prior  # noqa: E402
from tests.helpers import write_object  # noqa: E402


@pytest.fixture
def handlers(tmp_path: Path):  # noqa: ANN201
    from lucid_app.ui.doctor_panel import DoctorHandlers
    from lucid_app.ui.handlers import AppHandlers

    return DoctorHandlers(AppHandlers(SimpleNamespace(outputs=tmp_path)))


ARGS = dict(model="offline-demo", preset="", prompt="a red toy car", timesteps="300,450", methods=["ism", "sds"],
            seeds=2, references="demo_dataset")


def test_the_request_is_the_models_training_preset_with_bounded_values(handlers) -> None:
    request = handlers.doctor_request(**ARGS)
    assert request.config.model.id.startswith("multiview:") and request.config.model.id.endswith("assets/demo")
    assert request.config.guidance.warmup_steps == 0  # the demo preset: the offline demo model's own settings
    assert request.settings == DoctorSettings(timesteps=(300, 450), methods=("ism", "sds"), seeds=2)
    assert request.dataset is not None and request.dataset.name == "demo"
    assert handlers.doctor_request(**{**ARGS, "references": "samples", "methods": "sdi"}).dataset is None


@pytest.mark.parametrize("change, message", [
    ({"model": "/etc/passwd"}, "unknown model"),
    ({"model": "multiview:/root"}, "unknown model"),
    ({"preset": "../../etc/x"}, "unknown preset"),
    ({"prompt": "  "}, "Give the prompt"),
    ({"timesteps": "0,300"}, "t: "),
    ({"timesteps": ",".join(["300"] * 9)}, "at most"),
    ({"methods": ["ism", "naive"]}, "methods: pick some of ism, sds, sdi"),
    ({"methods": []}, "methods: pick some"),
    ({"seeds": 2.5}, "seeds"),
    ({"seeds": 99}, "seeds: between 1 and 8"),
    ({"references": "/some/folder"}, "references: pick one of samples, demo_dataset"),
])
def test_bad_values_are_one_line_naming_the_field(handlers, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        handlers.doctor_request(**{**ARGS, **change})


def test_the_task_reports_the_doctors_numbers_writes_its_files_and_remembers_the_verdict(tmp_path: Path) -> None:
    root = tmp_path / "chair"
    write_object(root, "a red chair", [(a, 80.0) for a in range(-180, 180, 45)], seed=0,
                 test_views=[(a, 80.0) for a in (10.0, 100.0)])
    config = apply_overrides(TrainConfig(), [f"model.id=multiview:{root}", "model.multiview_resolution=16",
                                             "render.width=16", "render.height=16", "prompt.text=a red chair",
                                             "prompt.negative="])
    settings = DoctorSettings(timesteps=(300,), methods=("ism", "sds"), seeds=1)
    progress: list[tuple[int, int]] = []
    context = TaskContext(device="cpu", load_prior=lambda model: load_prior(model.id, model),
                          folder=tmp_path / "task", progress=lambda done, total: progress.append((done, total)))
    result = run_doctor(DoctorRequest(config, settings, root, views=2), context)
    data = result.data
    assert data["model"] == config.model.id and data["t"] == [300] and set(data["verdict"]) == {"ism", "sds"}
    # The identities the doctor rests on hold here too: r_ISM = gain_s − gain_t, r_SDS = 1 − gain_t.
    r, gain = data["restoring"], data["gain"]
    assert r["ism"]["300"] == pytest.approx(gain["ism"]["s"]["300"] - gain["ism"]["t"]["300"], abs=1e-5)
    assert r["sds"]["300"] == pytest.approx(1.0 - gain["sds"]["t"]["300"], abs=1e-5)
    assert data["svg"].startswith("<svg") and progress[-1][0] == progress[-1][1] > 0
    saved = json.loads(Path(result.files["json"]).read_text())
    assert saved["restoring"] == data["restoring"] and Path(result.files["svg"]).read_text() == data["svg"]
    assert known_verdict(config.model.id)["verdict"] == data["verdict"]


@pytest.mark.slow
def test_the_doctor_endpoint_answers_a_client(tmp_path: Path) -> None:
    from tests.app_harness import gradio_client, running_app

    with running_app(tmp_path / "outputs") as (_, url):
        table, svg, text = gradio_client(url).predict(
            model="offline-demo", preset="", prompt="a red toy car", timesteps="300", methods=["sds"], seeds=1,
            references="demo_dataset", api_name="/doctor")
    data = json.loads(text)
    assert data["verdict"] == {"sds": data["verdict"]["sds"]} and "SDS" in table and svg.startswith("<svg")
    assert data["references"]["source"] == "dataset" and not data["references"]["dataset"].startswith("/")
    assert not data["model"].startswith("/"), "no server path reaches a client"
