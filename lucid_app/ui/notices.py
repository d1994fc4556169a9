"""Notices shown next to the settings a prior cannot use (issue 14): the user reads it in the page, not in the log.

Pure functions of the form's values and the server's models: which model a run would use (the form's model name in
the server's list, else the preset's), and what that model does with the negative prompt and Perp-Neg. A name that is
not in the list gets no notice (the run itself is refused); no client text is ever read as a path. The offline demo's
multi-view prior interprets a prompt only when it names one of its objects (DESIGN §5: a negative prompt that matches
no caption means "unconditional").
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from lucid_app.config import ConfigError
from lucid_app.config.presets import load_config
from lucid_app.priors.base import PriorError
from lucid_app.priors.model_ref import ModelRef, model_ref_of
from lucid_app.priors.multiview import split_view_suffix
from lucid_app.priors.nerf_dataset import object_folders


def run_model(model: str, preset: str, models: Mapping[str, ModelRef]) -> ModelRef | None:
    """The model a run of the form would load: the form's model name in ``models``, else (for "") the preset's;
    None when unknown."""
    name = str(model or "").strip()
    if name:
        return models.get(name)
    try:
        return model_ref_of(load_config(preset or None).model)
    except ConfigError:
        return None


@lru_cache(maxsize=8)
def demo_captions(folder: str) -> tuple[str, ...]:
    """The captions of the objects of the multi-view dataset ``folder`` (empty when the folder is missing)."""
    try:
        folders = object_folders(Path(folder))
    except PriorError:
        return ()
    captions = []
    for obj in folders:
        caption_file = obj / "caption.txt"
        captions.append(caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file()
                        else obj.name.replace("_", " "))
    return tuple(captions)


def negative_notice(ref: ModelRef | None, negative: str) -> str:
    """Markdown under the negative prompt: what the run's prior ``ref`` does with it ("" when it uses it as
    written)."""
    if ref is None or ref.kind != "multiview" or not str(negative or "").strip():
        return ""
    captions = demo_captions(ref.location)
    subject, _ = split_view_suffix(str(negative).strip().lower())
    if any(subject == c.lower() or subject in c.lower() or c.lower() in subject for c in captions if c):
        return ""
    names = ", ".join(f"“{html.escape(c)}”" for c in captions) or "its objects"
    return (f"Note: the offline demo's prior ignores this negative prompt (it understands only its objects' names: "
            f"{names}); CFG runs unconditional, as with an empty negative.")


def perp_neg_notice(preset: str, perp_neg: bool) -> str:
    """Markdown beside the Perp-Neg box: why it would have no effect for this run ("" when it works)."""
    if not perp_neg:
        return ""
    try:
        prompt = load_config(preset or None).prompt
    except ConfigError:
        return ""
    if not prompt.view_dependent or not any((prompt.front_suffix, prompt.side_suffix, prompt.back_suffix)):
        return "Note: Perp-Neg needs view prompts (prompt.view_dependent and the view suffixes); this preset has none."
    return ""


def setting_notices(model: str, preset: str, negative: str, perp_neg: bool,
                    models: Mapping[str, ModelRef]) -> tuple[str, str]:
    """(the negative prompt's notice, the Perp-Neg notice) for the form's current values; ``preset`` is a checked
    preset name, ``models`` the server's models by name."""
    return negative_notice(run_model(model, preset, models), negative), perp_neg_notice(preset, perp_neg)


__all__ = ["demo_captions", "negative_notice", "perp_neg_notice", "run_model", "setting_notices"]
