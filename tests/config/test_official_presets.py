"""Presets named after an official LucidDreamer example match its config (configs/*.yaml of
EnVision-Research/LucidDreamer): prompt, negative prompt, δ_T, Perp-Neg, camera ranges."""

from __future__ import annotations

import pytest

from lucid_app.config.negatives import negative_text
from lucid_app.train.prepare import resolve_config

PAPER_NEGATIVE = ("unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, low-resolution, "
                  "oversaturation.")
DARK = "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, oversaturation."
NO_OVERSATURATION = "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, low-resolution."
SHORT = "unrealistic, blurry, low quality."

# preset: (text, negative, delta_t, perp_neg, polar range, start azimuth range) as in the official files.
OFFICIAL = {
    "hamburger": ("A delicious hamburger.", DARK, 50, False, (45.0, 105.0), (-180.0, 180.0)),
    "football_helmet": ("a DSLR photo of a football helmet.", PAPER_NEGATIVE, 50, False, (45.0, 90.0),
                        (-180.0, 180.0)),
    "ironman": ("A portrait of IRONMAN, white hair, head, photorealistic, 8K, HDR.", NO_OVERSATURATION, 50, True,
                (45.0, 90.0), (-80.0, 80.0)),
    "zombie_joker": ("Zombie JOKER, head, photorealistic, 8K, HDR.", DARK, 50, True, (45.0, 90.0), (-80.0, 80.0)),
    "viking_axe": ("Viking axe, fantasy, weapon, blender, 8k, HDR.", PAPER_NEGATIVE, 25, False, (45.0, 105.0),
                   (-180.0, 180.0)),
    "bagel": ("a DSLR photo of a bagel filled with cream cheese and lox.", DARK, 80, False, (45.0, 105.0),
              (-180.0, 180.0)),
    "cat_armor": ("a DSLR photo of a cat wearing armor.", PAPER_NEGATIVE, 80, True, (60.0, 90.0), (-180.0, 180.0)),
    "crown": ("a DSLR photo of the Imperial State Crown of England.", SHORT, 80, False, (45.0, 105.0),
              (-180.0, 180.0)),
}


@pytest.mark.parametrize("preset", sorted(OFFICIAL))
def test_preset_matches_the_official_config(preset: str) -> None:
    text, negative, delta_t, perp_neg, polar, azimuth = OFFICIAL[preset]
    config = resolve_config(preset)
    assert config.prompt.text == text
    assert config.prompt.negative == negative
    assert config.guidance.delta_t == delta_t and config.guidance.delta_t_start == 100
    assert config.guidance.perp_neg is perp_neg
    assert config.cameras.polar_range_deg == polar == config.cameras.max_polar_range_deg
    assert config.cameras.azimuth_range_deg == azimuth
    assert config.cameras.max_azimuth_range_deg == (-180.0, 180.0)
    # The official behaviours are on in every official preset.
    assert config.loss.flip_ratio == 0.5 and config.guidance.offset_noise == 0.1
    assert config.loss.tv_norm == "l2" and config.loss.tv_depth_source == "disparity"
    assert not config.guidance.inversion_control


def test_negative_library_holds_the_official_texts() -> None:
    assert negative_text("@paper") == PAPER_NEGATIVE and negative_text("@paper_dark") == DARK
    assert negative_text("@paper_no_oversaturation") == NO_OVERSATURATION and negative_text("@short") == SHORT
