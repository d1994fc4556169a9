"""The doctor's remembered verdicts and the warning a run gets before it trains with a method that drifts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lucid_app.config import TrainConfig, apply_overrides
from lucid_app.lab.doctor.verdicts import (
    VERDICT_NAME,
    drift_notice,
    known_verdict,
    remember,
    verdict_path,
)
from lucid_app.train.prepare import load_run_prior
from tests.helpers import write_object

SUMMARY = {"model": "ignored", "prompt": "a red chair", "t": [300, 450], "methods": ["ism", "sds"],
           "restoring": {"ism": {"300": -0.12, "450": -0.05}, "sds": {"300": 0.6, "450": 0.8}},
           "verdict": {"ism": "drifts", "sds": "restores"},
           "settings": {"guidance_scale": 7.5, "delta_t": 80}, "by_perturbation": {"white": {}}}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LUCID_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_remembered_verdict_is_read_back_per_model(cache: Path) -> None:
    path = remember("org/model-a", SUMMARY)
    assert path == verdict_path("org/model-a") and path.parent == cache / "doctor"
    known = known_verdict("org/model-a")
    assert known["verdict"] == {"ism": "drifts", "sds": "restores"} and known["model"] == "org/model-a"
    assert "by_perturbation" not in known  # only the headline is kept
    assert known_verdict("org/model-b") is None


def test_the_drift_notice_names_the_method_the_worst_r_and_the_settings(cache: Path) -> None:
    remember("org/model-a", SUMMARY)
    notice = drift_notice("org/model-a", "ism")
    assert notice.startswith("ISM is known to drift on this model")
    assert "-0.12 at t = 300" in notice and "guidance_scale 7.5" in notice and "SDS restores there" in notice
    assert drift_notice("org/model-a", "sds") is None  # restores
    assert drift_notice("org/model-a", "sdi") is None  # not measured
    assert drift_notice("org/unknown", "ism") is None


def test_a_prior_folders_own_verdict_comes_first(cache: Path, tmp_path: Path) -> None:
    folder = tmp_path / "prior"
    folder.mkdir()
    (folder / "lucid_prior.json").write_text("{}")
    (folder / VERDICT_NAME).write_text(json.dumps({**SUMMARY, "verdict": {"ism": "restores"}}))
    remember(str(folder), SUMMARY)  # the cache says "drifts"; the shipped file wins
    assert known_verdict(str(folder))["verdict"] == {"ism": "restores"}
    assert drift_notice(str(folder), "ism") is None


def test_a_damaged_cache_file_is_no_verdict(cache: Path) -> None:
    path = verdict_path("org/model-a")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert known_verdict("org/model-a") is None


def test_a_run_is_warned_before_it_trains(cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "chair"
    write_object(root, "a red chair", [(a, 80.0) for a in range(-180, 180, 90)], seed=0)
    config = apply_overrides(TrainConfig(), [f"model.id=multiview:{root}", "model.multiview_resolution=8",
                                             "prompt.text=a red chair", "guidance.method=ism"])
    assert load_run_prior(config, "cpu").notice is None
    remember(config.model.id, SUMMARY)
    notice = load_run_prior(config, "cpu").notice
    assert notice is not None and notice.startswith("ISM is known to drift")
    sds = apply_overrides(config, ["guidance.method=sds"])
    assert load_run_prior(sds, "cpu").notice is None
