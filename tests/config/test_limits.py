"""The schema's limits where they meet the rest of the app: the form, run resolution and the text encoder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lucid_app.config import MAX_STEPS, MAX_TEXT_CHARS, RENDER_SIZE_RANGE_PX, ConfigError, ModelConfig


def test_schema_limits_are_at_least_as_strict_as_the_forms() -> None:
    from lucid_app.ui import handlers

    assert MAX_STEPS <= handlers.MAX_STEPS
    form_lo, form_hi = handlers.RESOLUTION_RANGE_PX
    assert form_lo <= RENDER_SIZE_RANGE_PX[0] <= RENDER_SIZE_RANGE_PX[1] <= form_hi


def test_client_prompts_meet_the_schema_when_a_run_is_resolved() -> None:
    from lucid_app.train.prepare import resolve_config

    with pytest.raises(ConfigError, match=r"^prompt\.text: must have at most 1000 characters, got 100000$"):
        resolve_config("demo", prompt="a" * 100_000)
    with pytest.raises(ConfigError, match=r"^prompt\.negative: control character U\+0000"):
        resolve_config("demo", prompt="a red toy car", negative="blurry\x00")
    assert resolve_config("demo", prompt="b" * MAX_TEXT_CHARS).prompt.text == "b" * MAX_TEXT_CHARS


def test_stable_diffusion_warns_once_per_truncated_prompt(tiny_sd_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    prior = load_stable_diffusion(str(tiny_sd_dir), ModelConfig(), device="cpu")
    long_prompt = "a cat " * 60
    with caplog.at_level(logging.WARNING, logger="lucid_app.priors.stable_diffusion"):
        prior.encode_prompts(["a cat", long_prompt])
        prior.encode_prompts([long_prompt, "a cat"])
    # transformers' tokenize() (textual-inversion expansion) has a warning of its own; count ours.
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "lucid_app.priors.stable_diffusion" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "77 tokens" in warnings[0] and "a cat a cat" in warnings[0], warnings
