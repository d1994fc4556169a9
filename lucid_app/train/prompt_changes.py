"""Changing the negative prompt, the view-prompt suffixes and Perp-Neg while a run goes (issue #8).

A change is a :class:`~lucid_app.config.PromptChange` (None = unchanged). Its life:
1. :func:`check_changes` checks the names and values and resolves an ``@NAME`` negative to its library text.
2. :func:`encode_change` encodes only what the change introduces (the negative prompt, each changed view prompt)
   in the caller's thread: the UI's for a live change (:func:`request_change`), the trainer's ``__init__`` for a
   scheduled one (:func:`encode_schedule`). Nothing is encoded inside the training loop.
3. :func:`apply_change` composes those pieces with a :class:`~lucid_app.train.controls.PromptState` by slicing tensors
   only, so it can run under LiveControls' lock: a step sees the old prompt set or the new one entirely.
4. At the start of a step the trainer's :class:`PromptTrack` adopts the snapshot's state, keeping from it exactly
   the fields whose values differ from the state in force (:func:`adopt_state`), and records that difference in the
   run's schedule (:func:`record_change`), which ``config.yaml`` stores; :func:`replay` rebuilds the state in force
   at any step from a schedule.

Every piece depends only on its own text (the negative prompt, or "<prompt><suffix>" for one view) and is encoded
on its own, and a field whose value does not change keeps its piece, so pieces compose in any order and a replay of
``config.yaml`` rebuilds the run's embeddings bit for bit.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from lucid_app.config import GuidanceConfig, PromptChange, PromptConfig, TrainConfig, load_section, replace
from lucid_app.config.negatives import negative_text, resolve_schedule
from lucid_app.guidance.prompts import encode_or_unconditional, encode_prompt_set
from lucid_app.priors.base import DiffusionPrior
from lucid_app.train.controls import ControlState, LiveControls, PromptState

logger = logging.getLogger(__name__)

# The settings a PromptChange may change (all its fields but ``step``).
CHANGE_FIELDS = (
    "negative", "front_suffix", "side_suffix", "back_suffix", "perp_neg", "perp_neg_weight", "front_decay",
    "side_decay",
)
# PromptConfig fields among CHANGE_FIELDS; the suffixes are in the order of PromptEmbeddings.views.
_SUFFIX_FIELDS = ("front_suffix", "side_suffix", "back_suffix")
_TEXT_FIELDS = ("negative", *_SUFFIX_FIELDS)
_PERP_NEG_FIELDS = ("perp_neg", "perp_neg_weight", "front_decay", "side_decay")


@dataclass(frozen=True)
class EncodedChange:
    """A change with the conditionings of the texts it sets.

    Attributes:
        change: the change.
        negative: [1, ...] conditioning of ``change.negative`` (None when it is None).
        views: view index (0 front, 1 side, 2 back) → [1, ...] conditioning of "<prompt><suffix>" for each suffix
            the change sets.
    """

    change: PromptChange
    negative: torch.Tensor | None = None
    views: Mapping[int, torch.Tensor] = field(default_factory=dict)


def initial_prompt_state(prior: DiffusionPrior, prompt: PromptConfig, guidance: GuidanceConfig) -> PromptState:
    """The prompt state of a run's config: its prompts encoded with :func:`encode_prompt_set` and its Perp-Neg."""
    return PromptState(prompt=prompt, perp_neg=guidance.perp_neg, perp_neg_weight=guidance.perp_neg_weight,
                       front_decay=guidance.front_decay, side_decay=guidance.side_decay,
                       embeddings=encode_prompt_set(prior, prompt))


def check_changes(**changes: object) -> dict[str, object]:
    """Validate requested settings: names among :data:`CHANGE_FIELDS`, values of their field's type (None = leave
    unchanged, dropped), ``negative`` ``"@NAME"`` resolved to the library's text.

    Returns:
        {name: value} of the settings to change, coerced (ints to floats).

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or nothing to change.
        ConfigError: a value of the wrong type, or an ``@NAME`` not in the library (a ValueError too).
    """
    unknown = sorted(set(changes) - set(CHANGE_FIELDS))
    if unknown:
        raise ValueError(f"unknown prompt setting {unknown[0]!r}; valid: {', '.join(CHANGE_FIELDS)}")
    given = {name: value for name, value in changes.items() if value is not None}
    if not given:
        raise ValueError(f"no prompt setting to change; give one of: {', '.join(CHANGE_FIELDS)}")
    if isinstance(given.get("negative"), str):
        given["negative"] = negative_text(given["negative"])
    checked = load_section(PromptChange, {"step": 1, **given}, "prompt change")
    return {name: getattr(checked, name) for name in given}


def encode_change(prior: DiffusionPrior, prompt: PromptConfig, change: PromptChange) -> EncodedChange:
    """Encode the texts ``change`` sets, each on its own (a negative the prior cannot interpret falls back to the
    unconditional prompt, as in :func:`encode_prompt_set`); ``prompt.text`` is the positive prompt of the views.

    Raises:
        PriorError: the prior cannot interpret a new view prompt.
    """
    negative = None
    if change.negative is not None:
        negative = encode_or_unconditional(prior, change.negative, "negative", prior.encode_prompts([""]))
    views = {i: prior.encode_prompts([prompt.text + suffix])
             for i, name in enumerate(_SUFFIX_FIELDS) if (suffix := getattr(change, name)) is not None}
    return EncodedChange(change=change, negative=negative, views=views)


def held_pieces(state: PromptState, change: PromptChange) -> EncodedChange:
    """The conditionings ``state`` already holds for the texts ``change`` sets (slices, no encoding)."""
    embeddings = state.embeddings
    views = {i: embeddings.views[i : i + 1]
             for i, name in enumerate(_SUFFIX_FIELDS) if getattr(change, name) is not None}
    return EncodedChange(change=change, negative=embeddings.negative if change.negative is not None else None,
                         views=views)


def apply_change(state: PromptState | None, encoded: EncodedChange) -> PromptState:
    """``state`` with each value of ``encoded.change`` that differs from it (texts with their conditioning from
    ``encoded``); equal values keep their conditioning in force. No encoding: safe under LiveControls' lock.

    Raises:
        ValueError: ``state`` is None (no prompt set is in force yet: the run has not encoded its prompts).
    """
    if state is None:
        raise ValueError("no prompt set is in force yet: the run has not encoded its prompts")
    change, embeddings = encoded.change, state.embeddings
    texts: dict[str, str] = {}
    negative = embeddings.negative
    if change.negative is not None and change.negative != state.prompt.negative:
        texts["negative"], negative = change.negative, encoded.negative
    rows = list(embeddings.views.split(1))
    for i, name in enumerate(_SUFFIX_FIELDS):
        suffix = getattr(change, name)
        if suffix is not None and suffix != getattr(state.prompt, name):
            texts[name], rows[i] = suffix, encoded.views[i]
    views = torch.cat(rows) if any(name in texts for name in _SUFFIX_FIELDS) else embeddings.views
    perp_neg = {name: getattr(change, name) for name in _PERP_NEG_FIELDS if getattr(change, name) is not None}
    return dataclasses.replace(
        state, prompt=replace(state.prompt, **texts),
        embeddings=dataclasses.replace(embeddings, negative=negative, views=views), **perp_neg,
    )


def prompt_settings(prompt: PromptConfig, perp_neg: GuidanceConfig | PromptState) -> dict[str, object]:
    """{name: value} of every :data:`CHANGE_FIELDS` setting: the texts from ``prompt``, the Perp-Neg values from
    ``perp_neg`` (a config's ``guidance`` or a prompt state, which carry the same field names)."""
    return {name: getattr(prompt if name in _TEXT_FIELDS else perp_neg, name) for name in CHANGE_FIELDS}


def diff_states(before: PromptState, after: PromptState, step: int) -> PromptChange | None:
    """The change from ``before`` to ``after`` at ``step`` (the settings whose values differ), or None if none do."""
    old, new = prompt_settings(before.prompt, before), prompt_settings(after.prompt, after)
    values = {name: value for name, value in new.items() if value != old[name]}
    return PromptChange(step=step, **values) if values else None


def adopt_state(in_force: PromptState, new: PromptState, step: int) -> tuple[PromptState, PromptChange | None]:
    """The state in force at ``step`` once ``new`` is published, and the change that makes (None: ``in_force`` kept).

    Only the settings whose values differ are taken from ``new``, with their embeddings; the others keep theirs,
    exactly as :func:`replay` rebuilds them from the schedule.
    """
    change = diff_states(in_force, new, step)
    if change is None:
        return in_force, None
    return dataclasses.replace(apply_change(in_force, held_pieces(new, change)), version=new.version), change


def change_fields(change: PromptChange) -> dict[str, object]:
    """The settings ``change`` sets, {name: value} (for ``metrics.jsonl`` and messages)."""
    return {name: getattr(change, name) for name in CHANGE_FIELDS if getattr(change, name) is not None}


def record_change(
    schedule: tuple[PromptChange, ...], step: int, change: PromptChange | None
) -> tuple[PromptChange, ...]:
    """``schedule`` with its entry at ``step`` (if any) replaced by ``change`` (or dropped when None), in step order."""
    kept = [c for c in schedule if c.step != step] + ([change] if change is not None else [])
    return tuple(sorted(kept, key=lambda c: c.step))


def encode_schedule(
    prior: DiffusionPrior, prompt: PromptConfig, schedule: tuple[PromptChange, ...]
) -> dict[int, EncodedChange]:
    """{step: encoded change} for every entry of a (resolved) schedule, encoded up-front."""
    return {change.step: encode_change(prior, prompt, change) for change in schedule}


def replay(state: PromptState, scheduled: Mapping[int, EncodedChange], last_step: int) -> PromptState:
    """The prompt state in force after step ``last_step``: ``state`` with every scheduled change up to it applied."""
    for step in sorted(scheduled):
        if step <= last_step:
            state = apply_change(state, scheduled[step])
    return state


def request_change(controls: LiveControls, prior: DiffusionPrior, changes: Mapping[str, object]) -> PromptChange:
    """Encode checked ``changes`` (:func:`check_changes`) in this thread, then hand them to ``controls`` in one
    atomic swap; they act from the next step the trainer begins.

    Returns:
        The change, its ``step`` the first step that uses it.

    Raises:
        ValueError: ``controls`` hold no prompt state yet (no trainer has encoded its prompts).
    """
    current = controls.snapshot().prompt
    if current is None:
        raise ValueError("no prompt set is in force yet: the run has not encoded its prompts")
    change = PromptChange(step=1, **changes)
    encoded = encode_change(prior, current.prompt, change)
    _, step = controls.update_prompt(lambda state: apply_change(state, encoded))
    logger.info("prompt change from step %d: %s", step, change_fields(change))
    return replace(change, step=step)


class PromptTrack:
    """The prompt state in force during one run and the schedule of its changes (owned by the trainer).

    The config's schedule is encoded here, up-front; the state is published to ``controls``, where live changes
    compose with it, and the trainer adopts the controls' state at the start of every step.

    Args:
        prior: encodes the config's prompts and its schedule's changes.
        config: the run's config (``prompt``, the Perp-Neg settings of ``guidance``, ``prompt_schedule``).
        controls: the run's live controls.

    Attributes:
        state: the prompt state in force.
        schedule: every change so far, in step order (``@NAME`` negatives resolved); ``config.yaml`` records it.
    """

    def __init__(self, prior: DiffusionPrior, config: TrainConfig, controls: LiveControls) -> None:
        self.schedule = resolve_schedule(config.prompt_schedule)
        self._controls = controls
        self._base = initial_prompt_state(prior, config.prompt, config.guidance)
        self._scheduled = encode_schedule(prior, config.prompt, self.schedule)
        self.state = self._publish(self._base)

    def _publish(self, state: PromptState) -> PromptState:
        published, _ = self._controls.update_prompt(lambda _current: state)
        self._seen_version = published.version
        return published

    def restore(self, last_step: int) -> None:
        """Put in force the state after step ``last_step`` (a resumed run): the schedule replayed up to it."""
        self.state = self._publish(replay(self._base, self._scheduled, last_step))
        self._controls.begin_step(last_step)

    def begin_step(self, step: int) -> ControlState:
        """The controls' snapshot for ``step``, taken after the schedule's change at ``step`` (if any) joined them."""
        scheduled = self._scheduled.get(step)
        if scheduled is not None:
            self._controls.update_prompt(lambda state: apply_change(state, scheduled))
        return self._controls.begin_step(step)

    def adopt(self, snap: ControlState, step: int) -> PromptChange | None:
        """Put ``snap``'s prompt state in force for ``step`` (:func:`adopt_state`); the change it makes (None if none)
        replaces the schedule's entry at ``step``."""
        new = snap.prompt
        if new is None or new.version == self._seen_version:
            return None
        self._seen_version = new.version
        self.state, change = adopt_state(self.state, new, step)
        if change is not None or step in self._scheduled:
            self.schedule = record_change(self.schedule, step, change)
        if change is not None:
            logger.info("step %d: prompt change %s", step, change_fields(change))
        return change
