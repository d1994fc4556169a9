"""Shared test setup: offline hub, deterministic CPU threads, the `gpu` marker."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def pytest_configure(config: pytest.Config) -> None:
    # The doctor's verdict cache (lucid_app.lab.doctor.verdicts) of this test session, never the user's.
    os.environ["LUCID_CACHE_DIR"] = tempfile.mkdtemp(prefix="lucid-test-cache-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> os.PathLike[str]:
    """A tiny random-weight Stable Diffusion saved as a diffusers folder (see tests/tiny_sd.py)."""
    from tests.tiny_sd import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tmp_path_factory: pytest.TempPathFactory) -> os.PathLike[str]:
    """A tiny random-weight ControlNet matching ``tiny_sd_dir``'s UNet, as a diffusers folder."""
    from tests.tiny_sd import save_tiny_controlnet

    return save_tiny_controlnet(tmp_path_factory.mktemp("tiny_controlnet"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-object multi-view dataset ("a red chair", six 16 px views; tests.helpers.write_object). A test module
    that needs another dataset defines its own ``dataset`` fixture, which takes precedence."""
    from tests.helpers import write_object

    root = tmp_path_factory.mktemp("ds") / "chair"
    write_object(root, "a red chair", [(a, 80.0) for a in range(-180, 180, 60)], seed=0, size=16)
    return root


@pytest.fixture(scope="module")
def chair(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The model reference of a one-object multi-view prior ("a red chair", eight views at tests.helpers.TRAIN_SIZE
    px): ``multiview:<folder>``, for the tests that train on it."""
    from tests.helpers import TRAIN_SIZE, write_object

    root = tmp_path_factory.mktemp("mv") / "chair"
    write_object(root, "a red chair", [(a, 80.0) for a in range(-180, 180, 45)], seed=0, size=TRAIN_SIZE)
    return f"multiview:{root}"


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    """The file a planted pickle (tests.helpers.plant) creates when something unpickles it."""
    return tmp_path / "PWNED"
