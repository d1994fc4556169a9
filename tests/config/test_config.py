"""Strict config loading, presets and overrides."""

from __future__ import annotations

import dataclasses
import logging
import re
import types
import typing
from pathlib import Path

import pytest
from annotated_types import Ge, Gt, Le, Lt, MaxLen

from lucid_app import config as config_module
from lucid_app.config import (
    MAX_NESTING,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEXT_CHARS,
    PAPER_NEGATIVE,
    REMOVED_KEYS,
    ConfigError,
    PromptChange,
    TrainConfig,
    apply_overrides,
    from_dict,
    from_yaml,
    load_section,
    replace,
    to_dict,
    to_yaml,
)
from lucid_app.config.presets import PRESETS_DIR, list_presets, load_config


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
        ("[{step: 0, negative: a}]", r"prompt_schedule\[0\]\.step: must be >= 1, got 0"),
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
    assert "JOKER" in joker.prompt.text and joker.prompt.negative != ironman.prompt.negative  # its own (official)
    assert joker.cameras.azimuth_range_deg == ironman.cameras.azimuth_range_deg == (-80.0, 80.0)
    assert joker.guidance.perp_neg and joker.guidance.delta_t == ironman.guidance.delta_t == 50
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


# ----------------------------------------------------------------------- validation in the schema (one place)


def _config_classes() -> list[type]:
    """Every dataclass of the schema: TrainConfig, its sections and PromptChange."""
    hints = typing.get_type_hints(TrainConfig)
    return [TrainConfig, PromptChange, *(tp for tp in hints.values() if dataclasses.is_dataclass(tp))]


def _scalars(tp: typing.Any, metadata: tuple = ()) -> typing.Iterator[tuple[typing.Any, tuple]]:
    """(scalar type, its constraints) of every leaf of an annotation (tuple items, union arms)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(tp)
        yield from _scalars(base, metadata + tuple(extra))
    elif origin is tuple or origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is not Ellipsis and arg is not type(None):
                yield from _scalars(arg, metadata if origin is not tuple else ())
    else:
        yield tp, metadata


def test_every_numeric_field_is_bounded_and_every_text_field_capped() -> None:
    for cls in _config_classes():
        for name, tp in typing.get_type_hints(cls, include_extras=True).items():
            for scalar, metadata in _scalars(tp):
                kinds = {type(m) for m in metadata}
                if scalar in (int, float):
                    assert kinds & {Ge, Gt} and kinds & {Le, Lt}, f"{cls.__name__}.{name} needs both bounds"
                elif scalar is str:
                    assert MaxLen in kinds, f"{cls.__name__}.{name} needs a MaxLen"


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        ("prompt.text=a cat: wearing a hat", "text", "a cat: wearing a hat"),
        ("prompt.text=#7", "text", "#7"),
        ("prompt.negative=[blurry]", "negative", "[blurry]"),
        ("prompt.negative={ugly: 1}, dark", "negative", "{ugly: 1}, dark"),
        ("prompt.front_suffix=, front view: left # no comment", "front_suffix", ", front view: left # no comment"),
        ("prompt.inverse_text=null", "inverse_text", "null"),
        ("prompt.text=yes", "text", "yes"),
        ("prompt.text=0x1F", "text", "0x1F"),
    ],
)
def test_string_overrides_keep_the_text_verbatim(override: str, field: str, value: str) -> None:
    assert getattr(apply_overrides(TrainConfig(), [override]).prompt, field) == value


def test_quoted_string_overrides_and_text_lists() -> None:
    cfg = apply_overrides(TrainConfig(), ['prompt.front_suffix=" from the front"', "prompt.text='it''s a cat'",
                                          'avatar.pose="t_pose"', "guidance.method=sds"])
    assert cfg.prompt.front_suffix == " from the front" and cfg.prompt.text == "it's a cat"
    assert cfg.avatar.pose == "t_pose" and cfg.guidance.method == "sds"
    lists = {
        "model.textual_inversion=emb.safetensors": ("emb.safetensors",),
        "model.textual_inversion=owner/repo: a #1.bin": ("owner/repo: a #1.bin",),
        "model.textual_inversion=[a.bin, 'b: c.bin']": ("a.bin", "b: c.bin"),
        "model.textual_inversion=": (),
    }
    for override, expected in lists.items():
        assert apply_overrides(TrainConfig(), [override]).model.textual_inversion == expected, override


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.steps=-1", "optim.steps: must be >= 1, got -1"),
        ("optim.steps=0", "optim.steps: must be >= 1, got 0"),
        (f"optim.steps={MAX_STEPS + 1}", f"optim.steps: must be <= {MAX_STEPS}"),
        ("guidance.guidance_scale=.nan", "guidance.guidance_scale: must be a finite number, got nan"),
        ("guidance.guidance_scale=.inf", "guidance.guidance_scale: must be a finite number, got inf"),
        ("loss.tv_rgb=-.inf", "loss.tv_rgb: must be a finite number, got -inf"),
        ("cameras.radius_range=[3, .inf]", "cameras.radius_range[1]: must be a finite number"),
        (f"guidance.guidance_scale={10**400}", "guidance.guidance_scale: must be a finite number"),
        ("guidance.guidance_scale=-1", "guidance.guidance_scale: must be >= 0.0, got -1.0"),
        (f"seed={2**70}", f"seed: must be <= {MAX_SEED}, got {2**70}"),
        ("seed=-1", "seed: must be >= 0, got -1"),
        ("render.width=0", "render.width: must be >= 16, got 0"),
        ("render.height=100000", "render.height: must be <= 1024, got 100000"),
        ("guidance.t_range=[0.5, 0.02]", "guidance.t_range: must be [low, high] with low <= high, got [0.5, 0.02]"),
        ("guidance.t_range=[1.0, 1.0]", "guidance.t_range[0]: must be < 1.0"),
        ("guidance.max_t=1.5", "guidance.max_t: must be <= 1.0"),
        ("guidance.delta_t=0", "guidance.delta_t: must be >= 1"),
        ("guidance.delta_t_start=1000", "guidance.delta_t_start: must be <= 999"),
        ("guidance.xs_eta=2", "guidance.xs_eta: must be <= 1.0"),
        ("cameras.batch_size=0", "cameras.batch_size: must be >= 1"),
        ("cameras.batch_size=65", "cameras.batch_size: must be <= 64"),
        ("cameras.polar_range_deg=[100, 50]", "cameras.polar_range_deg: must be [low, high] with low <= high"),
        ("cameras.max_radius_range=[0, 1]", "cameras.max_radius_range[0]: must be > 0.0"),
        ("cameras.fovy_range_rad=[0.2, 3.5]", "cameras.fovy_range_rad[1]: must be < 3.14159"),
        ("render.bg_aug_ratio=1.5", "render.bg_aug_ratio: must be <= 1.0"),
        ("render.background=[1, 1, 2]", r"render.background[2]: must be <= 1.0"),
        ("init.num_points=0", "init.num_points: must be >= 1"),
        ("init.num_points=10000001", "init.num_points: must be <= 10000000"),
        ("init.opacity=1", "init.opacity: must be < 1.0"),
        ("init.sh_degree=4", "init.sh_degree: must be <= 3"),
        ("optim.means_lr=-0.1", "optim.means_lr: must be >= 0.0"),
        ("optim.means_lr_final=0", "optim.means_lr_final: a decaying learning rate needs both ends > 0"),
        ("densify.opacity_reset_value=0", "densify.opacity_reset_value: must be > 0.0"),
        ("export.log_every=0", "export.log_every: must be >= 1"),
        ("export.mesh_resolution=4", "export.mesh_resolution: must be >= 8"),
        ("model.multiview_keep_t=1000", "model.multiview_keep_t: must be <= 999"),
        ("prompt_schedule=[{step: 2, perp_neg_weight: .nan}]", r"prompt_schedule[0].perp_neg_weight: must be a finite"),
    ],
)
def test_out_of_bounds_values_are_one_line_errors_naming_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(TrainConfig(), [override])
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text, text


def test_the_same_bounds_hold_for_mappings_yaml_replace_and_sections() -> None:
    with pytest.raises(ConfigError, match=r"^guidance\.guidance_scale: must be a finite number, got nan$"):
        from_dict({"guidance": {"guidance_scale": float("nan")}})
    with pytest.raises(ConfigError, match=r"^optim\.steps: must be >= 1, got -1$"):
        from_yaml("optim:\n  steps: -1\n")
    with pytest.raises(ConfigError, match=r"^optim\.steps: must be >= 1, got 0$"):
        replace(TrainConfig().optim, steps=0)
    with pytest.raises(ConfigError, match=r"^prompt\.text: must have at most 1000 characters, got 100000$"):
        replace(TrainConfig().prompt, text="x" * 100_000)
    with pytest.raises(ConfigError, match=r"^prompt change\.negative: must have at most 1000 characters"):
        load_section(PromptChange, {"step": 1, "negative": "x" * 1001}, "prompt change")
    assert load_section(PromptChange, {"step": 1, "negative": None}, "prompt change").negative is None
    assert replace(TrainConfig().optim, steps=3).steps == 3


def test_boundary_values_and_the_tests_tiny_runs_are_accepted() -> None:
    cfg = apply_overrides(TrainConfig(), [
        f"seed={MAX_SEED}", f"optim.steps={MAX_STEPS}", "render.width=16", "render.height=1024",
        "guidance.t_range=[0.0, 1.0]", "guidance.t_range=[0.3, 0.3]", "guidance.guidance_scale=0",
        "guidance.delta_t=1", "guidance.delta_t_start=999", f"prompt.text={'x' * MAX_TEXT_CHARS}",
        "optim.means_lr=0", "optim.means_lr_final=0", "densify.every=0", "export.checkpoint_every=0",
        "export.preview_every=0", "cameras.widen_every=0", "guidance.warmup_steps=0",
    ])
    assert cfg.seed == MAX_SEED and cfg.guidance.t_range == (0.3, 0.3) and len(cfg.prompt.text) == MAX_TEXT_CHARS
    tiny = [
        "optim.steps=3", "render.width=32", "render.height=32", "init.num_points=200", "cameras.batch_size=2",
        "model.multiview_resolution=16", "export.turntable_size=16", "export.turntable_frames=3", "export.eval_views=2",
        "export.log_every=1", "densify.start_step=2", "densify.stop_step=4", "densify.every=2",
        "densify.opacity_reset_every=3", "densify.opacity_reset_until=4", "guidance.warmup_steps=4",
        "init.size=[0.8, 0.8, 0.8]", "init.opacity=0.01", "model.multiview_camera_sigma_deg=10",
        "export.turntable_rings=1", "optim.max_bad_steps=3",
    ]
    assert apply_overrides(TrainConfig(), tiny).optim.steps == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\x00b", r"^prompt\.negative: control character U\+0000 at position 1 is not allowed"),
        ("a\x1b[31m", r"^prompt\.negative: control character U\+001B at position 1"),
        ("a\rb", r"^prompt\.negative: control character U\+000D"),
    ],
)
def test_control_characters_are_rejected(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TrainConfig(), [f"prompt.negative={value}"])
    with pytest.raises(ConfigError, match=message):
        from_dict({"prompt": {"negative": value}})


def test_control_characters_in_other_strings_and_escapes() -> None:
    with pytest.raises(ConfigError, match=r"^prompt\.text: control character U\+0000"):
        apply_overrides(TrainConfig(), ['prompt.text="a\\u0000b"'])
    with pytest.raises(ConfigError, match=r"^model\.textual_inversion\[0\]: control character U\+0000"):
        apply_overrides(TrainConfig(), ["model.textual_inversion=a\x00.bin"])
    assert from_dict({"prompt": {"text": "two\nlines\tand a tab"}}).prompt.text == "two\nlines\tand a tab"


def test_long_prompts_are_rejected_with_the_limit() -> None:
    with pytest.raises(ConfigError, match=r"^prompt\.text: must have at most 1000 characters, got 100000$"):
        apply_overrides(TrainConfig(), ["prompt.text=" + "a" * 100_000])
    for key in ("negative", "inverse_text", "front_suffix", "side_suffix", "back_suffix"):
        with pytest.raises(ConfigError, match=rf"^prompt\.{key}: must have at most {MAX_TEXT_CHARS} characters"):
            from_dict({"prompt": {key: "b" * (MAX_TEXT_CHARS + 1)}})
    with pytest.raises(ConfigError, match=r"^init\.prompt: must have at most"):
        from_dict({"init": {"prompt": "c" * (MAX_TEXT_CHARS + 1)}})


def test_deeply_nested_values_are_config_errors(tmp_path: Path) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    with pytest.raises(ConfigError, match=rf"^guidance\.t_range: nested deeper than {MAX_NESTING} levels$"):
        apply_overrides(TrainConfig(), ["guidance.t_range=" + deep])
    with pytest.raises(ConfigError, match=rf"^cameras\.radius_range: nested deeper than {MAX_NESTING} levels$"):
        apply_overrides(TrainConfig(), ["cameras.radius_range=" + "[" * 100 + "]" * 100])
    with pytest.raises(ConfigError, match=r"^prompt\.text: must have at most 1000 characters, got 10000$"):
        apply_overrides(TrainConfig(), ["prompt.text=" + "[" * 10_000])
    with pytest.raises(ConfigError, match=rf"^config: nested deeper than {MAX_NESTING} levels$"):
        from_yaml("guidance:\n  t_range: " + deep + "\n")
    nested: list = []
    for _ in range(10_000):
        nested = [nested]
    with pytest.raises(ConfigError, match="nested deeper than"):
        from_dict({"guidance": {"t_range": nested}})
    preset = tmp_path / "deep.yaml"
    preset.write_text("prompt:\n  text: " + "{a: " * 10_000 + "b" + "}" * 10_000 + "\n")
    with pytest.raises(ConfigError, match=rf"^preset .*deep\.yaml: nested deeper than {MAX_NESTING} levels$"):
        load_config(str(preset))


def test_removed_keys_of_old_configs_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert set(REMOVED_KEYS) == {"model.device", "prompt.overhead_suffix", "export.progress_video"}
    old = to_dict(TrainConfig(seed=3))
    old["model"]["device"] = "cuda"
    old["prompt"]["overhead_suffix"] = ", overhead view"
    old["export"]["progress_video"] = True
    with caplog.at_level(logging.WARNING, logger=config_module.__name__):
        cfg = from_yaml(to_yaml(TrainConfig(seed=3)).replace("model:\n", "model:\n  device: cuda\n")
                        .replace("prompt:\n", "prompt:\n  overhead_suffix: ', overhead view'\n")
                        .replace("export:\n", "export:\n  progress_video: true\n"))
        assert from_dict(old) == cfg == TrainConfig(seed=3)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert all(key in warned for key in REMOVED_KEYS), warned
    for field in ("device", "overhead_suffix", "progress_video"):
        assert not any(field in f.name for cls in _config_classes() for f in dataclasses.fields(cls))
    with pytest.raises(ConfigError, match=r"^model\.device was removed: the device is chosen per run"):
        apply_overrides(TrainConfig(), ["model.device=cpu"])
    with pytest.raises(ConfigError, match=r"^unknown key model\.devices; valid keys of model: id, dtype"):
        from_dict({"model": {"devices": "cpu"}})


def test_shipped_presets_load_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        configs = [load_config(name) for name in list_presets()]
    assert len(configs) >= 11 and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for path in PRESETS_DIR.glob("*.yaml"):
        assert not any(re.search(rf"^\s*{key.split('.')[1]}:", path.read_text(), re.M) for key in REMOVED_KEYS), path
