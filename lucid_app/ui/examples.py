"""Example prompts that match the model (issue 27): each example (a prompt and its preset) is offered only when the
model a run of it would use can make it, and the others are listed with the reason.

A multi-view or learned prior makes only its own objects (its captions); Stable Diffusion makes any prompt, but only
where its weights are on the server (or can be downloaded) and a CUDA GPU makes a run take hours, not weeks.
Pure functions of the form's model and the server's facts, no Gradio.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from lucid_app.config import ConfigError
from lucid_app.priors.base import PriorError
from lucid_app.priors.learned_folder import read_metadata
from lucid_app.priors.model_ref import ModelRef
from lucid_app.train.prepare import weights_available
from lucid_app.ui.form import example_prompts
from lucid_app.ui.notices import demo_captions, run_model


@dataclass(frozen=True)
class Example:
    """One example: its prompt and preset, and why the chosen model cannot make it ("" when it can)."""

    prompt: str
    preset: str
    reason: str = ""


@lru_cache(maxsize=16)
def weights_on_server(model_id: str) -> bool:
    """:func:`~lucid_app.train.prepare.weights_available`, cached for the server's life."""
    return weights_available(model_id)


@lru_cache(maxsize=16)
def prior_captions(ref: ModelRef) -> tuple[str, ...] | None:
    """The captions a multi-view or learned prior knows (lower case), or None for any other model (Stable
    Diffusion, which takes any prompt)."""
    if ref.kind == "multiview":
        return tuple(c.lower() for c in demo_captions(ref.location))
    if ref.kind == "learned":
        try:
            return tuple(str(c).lower() for c in read_metadata(ref.location).get("captions", ()))
        except (OSError, ValueError, PriorError):
            return ()
    return None


def can_make(model: str, preset: str, prompt: str, cuda: bool, models: Mapping[str, ModelRef]) -> str:
    """Why a run of ``prompt`` with the form's ``model`` (a name of ``models``; "" = the preset's) cannot make it,
    or "" when it can."""
    ref = run_model(model, preset, models)
    if ref is None:
        return "its preset does not load"
    captions = prior_captions(ref)
    if captions is not None:
        if prompt.strip().lower() in captions:
            return ""
        return "the offline demo makes only its own objects" if captions else "its prior knows no objects"
    if not weights_on_server(ref.id):
        return "needs Stable Diffusion weights, which this server does not have (offline, not downloaded)"
    if not cuda:
        return "needs Stable Diffusion on a CUDA GPU: on this server's CPU a run takes days"
    return ""


def examples_for(model: str, cuda: bool, models: Mapping[str, ModelRef]) -> list[Example]:
    """Every example prompt (``form.example_prompts``) with the reason the form's ``model`` cannot make it."""
    out = []
    for prompt, preset in example_prompts():
        try:
            reason = can_make(model, preset, prompt, cuda, models)
        except ConfigError:
            reason = "its preset does not load"
        out.append(Example(prompt, preset, reason))
    return out


def unavailable_note(examples: list[Example]) -> str:
    """Markdown listing the examples that are not offered, grouped by reason ("" when all are)."""
    by_reason: dict[str, list[str]] = {}
    for example in examples:
        if example.reason:
            by_reason.setdefault(example.reason, []).append(example.prompt)
    return "  \n".join(f"Not offered ({reason}): " + "; ".join(f"“{html.escape(p)}”" for p in prompts)
                       for reason, prompts in by_reason.items())


__all__ = ["Example", "can_make", "examples_for", "prior_captions", "unavailable_note", "weights_on_server"]
