"""The negative-prompt library and ``@NAME`` references in configs."""

from __future__ import annotations

import pytest

from lucid_app.config import PAPER_NEGATIVE, ConfigError, PromptChange, PromptConfig, TrainConfig, replace
from lucid_app.config.negatives import list_negatives, load_negatives, negative_text, resolve_negative
from lucid_app.config.presets import list_presets, load_config
from lucid_app.train.prepare import resolve_config


def test_library_holds_the_paper_set_and_its_variants() -> None:
    assert {"paper", "paper_dark", "paper_no_oversaturation", "short", "none"} <= set(list_negatives())
    assert negative_text("@paper") == PAPER_NEGATIVE
    assert negative_text("@paper_dark") == PAPER_NEGATIVE.replace("dull, low-resolution", "dull, dark, low-resolution")
    assert negative_text("@paper_no_oversaturation") == PAPER_NEGATIVE.replace(", oversaturation.", ".")
    assert negative_text("@short") == "unrealistic, blurry, low quality."
    assert negative_text("@none") == ""
    assert negative_text("plain text, not a name") == "plain text, not a name"
    assert "negatives" not in list_presets()


def test_unknown_name_lists_the_library() -> None:
    with pytest.raises(ConfigError, match="@paper_dark"):
        negative_text("@nope")
    with pytest.raises(ConfigError, match="unknown negative prompt"):
        resolve_config(prompt="a cat", negative="@nope")


@pytest.mark.parametrize(
    ("preset", "name"), [("crown", "short"), ("hamburger", "paper_dark"), ("ironman", "paper_no_oversaturation")]
)
def test_presets_refer_by_name_and_resolve_config_resolves(preset: str, name: str) -> None:
    assert load_config(preset).prompt.negative == f"@{name}"
    assert resolve_config(preset).prompt.negative == negative_text(f"@{name}")
    overridden = resolve_config(preset, overrides=["prompt.negative=@none"])
    assert overridden.prompt.negative == ""
    assert resolve_config(preset, negative="@paper").prompt.negative == PAPER_NEGATIVE


def test_resolve_negative_also_resolves_the_prompt_schedule() -> None:
    config = TrainConfig(
        prompt=PromptConfig(text="x", negative="@short"),
        prompt_schedule=(PromptChange(step=2, negative="@paper_dark"), PromptChange(step=5, perp_neg=True)),
    )
    resolved = resolve_negative(config)
    library = load_negatives()
    assert resolved.prompt.negative == library["short"]
    assert resolved.prompt_schedule[0].negative == library["paper_dark"]
    assert resolved.prompt_schedule[1] == config.prompt_schedule[1]
    with pytest.raises(ConfigError, match="@nope"):
        resolve_negative(replace(config, prompt_schedule=(PromptChange(step=2, negative="@nope"),)))
