"""The 2D distillation check (``bench distill2d``) against a one-image multi-view prior."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lucid_app.bench.distill2d import distill2d, psnr_to_nearest
from lucid_app.config import GuidanceConfig, ModelConfig
from tests.helpers import write_object

CONSTANT_KERNEL = ModelConfig(multiview_resolution=16, multiview_kernel="constant", multiview_sigma=0.1)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Hundreds of tiny steps run ~10x faster on one thread than on contended cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_psnr_to_nearest() -> None:
    refs = torch.stack([torch.zeros(2, 2, 3), torch.full((2, 2, 3), 0.5)])
    assert psnr_to_nearest(torch.full((2, 2, 3), 0.4), refs) == pytest.approx(20.0)


def test_sds_distils_the_dataset_image(tmp_path: Path, one_thread: None) -> None:
    write_object(tmp_path / "chair", "a red chair", [(0.0, 80.0)], seed=0, size=16)
    result = distill2d(
        f"multiview:{tmp_path / 'chair'}", "a red chair", "sds", steps=200, seed=0, lr=0.02,
        guidance=GuidanceConfig(lambda_guidance=1.0), model_config=CONSTANT_KERNEL,
    )
    assert set(result) == {"method", "steps", "psnr_by_step", "final_psnr", "wall_s"}
    assert result["method"] == "sds" and result["steps"] == 200
    psnrs = [p for _, p in result["psnr_by_step"]]
    assert psnrs[0] < 20.0 < 30.0 < result["final_psnr"]
    again = distill2d(
        f"multiview:{tmp_path / 'chair'}", "a red chair", "sds", steps=20, seed=0, lr=0.02,
        guidance=GuidanceConfig(lambda_guidance=1.0), model_config=CONSTANT_KERNEL,
    )
    assert again["psnr_by_step"] == result["psnr_by_step"][:2]


@pytest.mark.parametrize("model_config", [CONSTANT_KERNEL, ModelConfig(multiview_resolution=16)],
                         ids=["constant-kernel", "snr-kernel"])
def test_ism_distils_the_dataset_image_on_the_smoothed_prior(
    tmp_path: Path, one_thread: None, model_config: ModelConfig
) -> None:
    write_object(tmp_path / "chair", "a red chair", [(0.0, 80.0)], seed=0, size=16)
    result = distill2d(
        f"multiview:{tmp_path / 'chair'}", "a red chair", "ism", steps=200, seed=0, lr=0.02,
        guidance=GuidanceConfig(lambda_guidance=1.0, warmup_steps=0), model_config=model_config,
    )
    psnrs = [p for _, p in result["psnr_by_step"]]
    assert psnrs[0] < 20.0 < 30.0 < result["final_psnr"]


def test_distill2d_rejects_unknown_method(tmp_path: Path) -> None:
    write_object(tmp_path / "chair", "a red chair", [(0.0, 80.0)], seed=0)
    with pytest.raises(ValueError, match="ism"):
        distill2d(f"multiview:{tmp_path / 'chair'}", "a red chair", "vsd", steps=1, seed=0)  # type: ignore[arg-type]
