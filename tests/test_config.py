"""Strict config loading, presets and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from lucid_app.config import (
    PAPER_NEGATIVE,
    ConfigError,
    PromptChange,
    TrainConfig,
    apply_overrides,
    from_dict,
    from_yaml,
    to_yaml,
)
from lucid_app.presets import PRESETS_DIR, list_presets, load_config


def test_defaults_are_the_reference_settings() -> None:
    cfg = TrainConfig()
    assert cfg.guidance.guidance_scale == 7.5
    assert (cfg.guidance.delta_t, cfg.guidance.delta_t_start, cfg.guidance.warmup_steps) == (80, 100, 1500)
    assert (cfg.guidance.xs_delta_t, cfg.guidance.xs_inv_steps, cfg.guidance.lambda_guidance) == (200, 5, 0.1)
    assert cfg.densify.grad_threshold == 7.5e-4 and cfg.densify.opacity_reset_every == 300
    assert cfg.prompt.negative == PAPER_NEGATIVE


def test_unknown_key_names_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict({"guidance": {"delta": 3}})
    message = str(err.value)
    assert "guidance.delta" in message and "delta_t" in message and "xs_inv_steps" in message
    with pytest.raises(ConfigError, match="valid keys: seed, prompt, guidance"):
        from_dict({"guidanse": {}})


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"guidance": {"delta_t": "abc"}}, "guidance.delta_t"),
        ({"guidance": {"delta_t": 2.5}}, "guidance.delta_t"),
        ({"guidance": {"perp_neg": "yes"}}, "guidance.perp_neg"),
        ({"guidance": {"method": "vsd"}}, "guidance.method"),
        ({"guidance": {"t_range": [0.1]}}, "guidance.t_range"),
        ({"prompt": {"text": 3}}, "prompt.text"),
        ({"cameras": 5}, "cameras"),
    ],
)
def test_wrong_type_names_the_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_dict(data)


def test_int_is_accepted_for_float_and_lists_become_tuples() -> None:
    cfg = from_dict({"guidance": {"guidance_scale": 10, "t_range": [0.1, 0.6]}})
    assert cfg.guidance.guidance_scale == 10.0 and isinstance(cfg.guidance.guidance_scale, float)
    assert cfg.guidance.t_range == (0.1, 0.6)


def test_overrides_coerce_types() -> None:
    cfg = apply_overrides(
        TrainConfig(),
        [
            "guidance.delta_t=50",
            "guidance.guidance_scale=12",
            "guidance.perp_neg=true",
            "prompt.text=1984",
            "prompt.negative=",
            "cameras.radius_range=[3, 4.5]",
            "model.textual_inversion=emb.safetensors",
        ],
    )
    assert cfg.guidance.delta_t == 50
    assert cfg.guidance.guidance_scale == 12.0
    assert cfg.guidance.perp_neg is True
    assert cfg.prompt.text == "1984"
    assert cfg.prompt.negative == ""
    assert cfg.cameras.radius_range == (3.0, 4.5)
    assert cfg.model.textual_inversion == ("emb.safetensors",)


@pytest.mark.parametrize("bad", ["guidance.delta_t", "=3", "guidance.nope=1", "seed.x=1", "guidance.delta_t=x"])
def test_bad_overrides_are_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        apply_overrides(TrainConfig(), [bad])


def test_config_is_frozen() -> None:
    cfg = TrainConfig()
    with pytest.raises(AttributeError):
        cfg.guidance.delta_t = 3  # type: ignore[misc]


def test_yaml_round_trip() -> None:
    cfg = apply_overrides(TrainConfig(), ["prompt.text=a cat: with a colon", "cameras.fovy_range_rad=[0.2, 0.7]"])
    assert from_yaml(to_yaml(cfg)) == cfg


def test_avatar_section_round_trips_and_is_strict() -> None:
    assert TrainConfig().avatar.enabled is False
    cfg = apply_overrides(TrainConfig(), [
        "avatar.enabled=true", "avatar.pose=t_pose", "avatar.smpl_dir=/models/smpl", "avatar.gender=female",
    ])
    assert (cfg.avatar.enabled, cfg.avatar.pose, cfg.avatar.smpl_dir, cfg.avatar.gender) == (
        True, "t_pose", "/models/smpl", "female")
    assert from_yaml(to_yaml(cfg)) == cfg
    with pytest.raises(ConfigError, match="not one of"):
        apply_overrides(cfg, ["avatar.gender=robot"])
    with pytest.raises(ConfigError, match="valid keys of avatar: enabled, pose, smpl_dir, gender"):
        apply_overrides(cfg, ["avatar.height=2"])


def test_prompt_schedule_loads_strictly_and_round_trips() -> None:
    cfg = from_yaml(
        "prompt_schedule:\n"
        "  - {step: 4, negative: blurry, perp_neg: true}\n"
        "  - {step: 9, front_suffix: ', from the front', perp_neg_weight: -3, side_decay: 8}\n"
    )
    assert cfg.prompt_schedule == (
        PromptChange(step=4, negative="blurry", perp_neg=True),
        PromptChange(step=9, front_suffix=", from the front", perp_neg_weight=-3.0, side_decay=8.0),
    )
    assert isinstance(cfg.prompt_schedule[1].perp_neg_weight, float) and cfg.prompt_schedule[1].negative is None
    text = to_yaml(cfg)
    assert "null" not in text, "unset fields are left out of the YAML"
    assert from_yaml(text) == cfg
    assert TrainConfig().prompt_schedule == () and from_yaml(to_yaml(TrainConfig())) == TrainConfig()
    overridden = apply_overrides(TrainConfig(), ["prompt_schedule=[{step: 2, negative: ''}]"])
    assert overridden.prompt_schedule == (PromptChange(step=2, negative=""),)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("[{step: 5, negative: a}, {step: 3, negative: b}]", r"prompt_schedule\[1\]\.step: steps must increase"),
        ("[{step: 5, negative: a}, {step: 5, negative: b}]", "steps must increase, got 5 after 5"),
        ("[{step: 0, negative: a}]", r"prompt_schedule\[0\]: step must be >= 1"),
        ("[{negative: a}]", r"missing key prompt_schedule\[0\]\.step"),
        ("[{step: 2, negativ: a}]", r"valid keys of prompt_schedule\[0\]: step, negative, front_suffix"),
        ("[{step: 2, perp_neg: 1}]", r"prompt_schedule\[0\]\.perp_neg"),
        ("[{step: 2, front_decay: fast}]", r"prompt_schedule\[0\]\.front_decay"),
        ("[{step: true}]", r"prompt_schedule\[0\]\.step"),
    ],
)
def test_bad_prompt_schedules_are_errors(schedule: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_yaml(f"prompt_schedule: {schedule}\n")


def test_every_preset_loads() -> None:
    names = list_presets()
    assert {"paper", "viking_axe", "bagel", "cat_armor", "crown", "football_helmet", "hamburger", "ironman",
            "zombie_joker", "custom_token"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, TrainConfig)
        if name != "paper":
            assert cfg.prompt.text, name


def test_preset_base_chain_is_partial() -> None:
    joker = load_config("zombie_joker")
    ironman = load_config("ironman")
    assert "Joker" in joker.prompt.text
    assert joker.cameras.azimuth_range_deg == ironman.cameras.azimuth_range_deg == (-80.0, 80.0)
    assert joker.guidance.perp_neg and joker.prompt.negative == ironman.prompt.negative
    for path in PRESETS_DIR.glob("*.yaml"):
        text = path.read_text()
        if text.startswith("base:") or "\nbase:" in text:
            assert len(text.splitlines()) <= 25, f"{path.name} should be a few lines of overrides"


def test_preset_then_overrides(tmp_path: Path) -> None:
    cfg = load_config("hamburger", ["guidance.delta_t=30"])
    assert cfg.guidance.delta_t == 30 and "hamburger" in cfg.prompt.text


def test_unknown_preset_lists_available() -> None:
    with pytest.raises(ConfigError, match="available presets: .*paper"):
        load_config("no_such_preset")


def test_preset_file_errors(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("guidance:\n  deltaT: 3\n")
    with pytest.raises(ConfigError, match="guidance.deltaT.*delta_t"):
        load_config(str(bad_key))
    cycle_a, cycle_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    cycle_a.write_text(f"base: {cycle_b}\n")
    cycle_b.write_text(f"base: {cycle_a}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(cycle_a))
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("prompt: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(not_yaml))
    child = tmp_path / "child.yaml"
    child.write_text("base: paper\nguidance:\n  delta_t: 20\n")
    assert load_config(str(child)).guidance.delta_t == 20
