"""``bench step`` and SD 2.1 base's architecture built from configs (no download): parameter counts, every stage
timed on the mini architecture, and (opt-in, LUCID_FULL_SIZE=1) a full-size step on the CPU."""

from __future__ import annotations

import math
import os

import pytest
import torch

from lucid_app.priors.sd_architecture import _text_encoder, _unet, _vae, build_pipeline, clip_sized_tokenizer
from lucid_app.bench.step import STAGES, bench_step


# The full-size step (SD 2.1 base at 512², 4 views) takes minutes on a CPU: run only with LUCID_FULL_SIZE=1.
FULL_SIZE = os.environ.get("LUCID_FULL_SIZE") == "1"


def test_full_size_architecture_has_sd21_base_parameter_counts() -> None:
    """Built on the meta device (no memory, no time): the counts of stabilityai/stable-diffusion-2-1-base."""
    tokenizer = clip_sized_tokenizer()
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    with torch.device("meta"):
        text = _text_encoder(tokenizer, "sd21-base")
        unet = _unet("sd21-base", 64, 1024)
        vae = _vae("sd21-base", 512)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == 865_910_724 and count(vae) == 83_653_863 and count(text) == 340_387_840


def test_bench_step_reports_every_stage_on_the_mini_arch() -> None:
    report = bench_step(arch="mini", views=1, size_px=32, device="cpu", steps=1, gaussians=300)
    assert report["losses_finite"] and report["dtype"] == "float32" and report["device"] == "cpu"
    stages = report["stage_s"]
    assert set(stages) == set(STAGES) and all(v >= 0 for v in stages.values())
    assert math.isclose(sum(stages.values()), report["s_per_step"], rel_tol=0.05, abs_tol=0.01)
    # ISM: one call per inversion step plus s → t (1 sample each), then the guided call of 2 samples.
    calls, evaluations = report["unet_calls_per_step"][0], report["unet_evaluations_per_step"][0]
    assert evaluations == (calls - 1) + 2
    assert report["peak_rss_gb"] > 0
    with pytest.raises(ValueError, match="multiple of 8"):
        build_pipeline("mini", 30, torch.float32)


@pytest.mark.slow
@pytest.mark.skipif(not FULL_SIZE, reason="full-size SD 2.1 step: ~7 min and ~9 GB on a 2-core CPU; LUCID_FULL_SIZE=1")
def test_full_size_step_on_the_cpu_fits_the_memory_target() -> None:
    report = bench_step(arch="sd21-base", views=4, size_px=512, device="cpu", steps=1)
    assert report["losses_finite"] and report["peak_rss_gb"] <= 12.0
