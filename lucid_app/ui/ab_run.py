"""The guidance lab's A/B run: one prompt and seed queued twice, differing in one field, compared side by side.

Modes: ``negative`` (A with the negative prompt, B with none — the true unconditional) and one mode per pair of
guidance methods (``AB_METHOD_PAIRS``: any two of ISM, SDS, SDI and naive; ``method`` is ISM vs SDS, its name
since before there were more).
Both jobs go through the app's job manager like any other run (same queue, same run folders); when both finish the
tab shows each one's final views side by side at the export's size (front, side, back, side, as the preview) and a
table of their figures: the PSNR between the two runs' final views, training time, s/step, prior evaluations,
Gaussians and the final guidance loss (each side's figures also as JSON, for the API).
"""

from __future__ import annotations

import html
import itertools
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from lucid_app.app.job_board import JobView
from lucid_app.app.past_runs import read_run, views_image, views_psnr
from lucid_app.config import ConfigError, TrainConfig, from_yaml, replace
from lucid_app.ui.errors import user_errors
from lucid_app.ui.guidance_handlers import GuidanceHandlers
from lucid_app.ui.handlers import AppHandlers, status_html

# The methods the A/B run compares, in the order their pairs are listed (keys of ``guidance.GUIDANCES``).
AB_METHODS = ("ism", "sds", "sdi", "naive")
METHOD_LABELS = {"ism": "ISM", "sds": "SDS", "sdi": "SDI", "naive": "naive"}
AB_METHOD_PAIRS: dict[str, tuple[str, str]] = {
    ("method" if pair == ("ism", "sds") else f"{pair[0]}_vs_{pair[1]}"): pair
    for pair in itertools.combinations(AB_METHODS, 2)
}
AB_MODES = {"negative": "With vs without the negative prompt",
            **{mode: f"{METHOD_LABELS[a]} vs {METHOD_LABELS[b]}" for mode, (a, b) in AB_METHOD_PAIRS.items()}}
AB_FIELDS = ("prompt", "negative", "preset", "model", "mode", "steps", "seed", "extra_overrides")
AB_OUTPUTS = ("status", "image_a", "image_b", "metrics_a", "metrics_b", "table")


def ab_configs(base: TrainConfig, mode: str) -> tuple[TrainConfig, TrainConfig]:
    """(A, B): ``base`` twice, differing only in the field ``mode`` names (same prompt, seed and all the rest).

    Raises:
        ConfigError: an unknown mode, or mode ``negative`` with an empty negative prompt (A and B would be equal).
            A method pair sets ``guidance.method`` to its first method in A and its second in B.
    """
    if mode == "negative":
        if not base.prompt.negative.strip():
            raise ConfigError("A/B with vs without the negative prompt needs a negative prompt: type one first")
        return base, replace(base, prompt=replace(base.prompt, negative=""))
    if mode in AB_METHOD_PAIRS:
        method_a, method_b = AB_METHOD_PAIRS[mode]
        return (replace(base, guidance=replace(base.guidance, method=method_a)),
                replace(base, guidance=replace(base.guidance, method=method_b)))
    raise ConfigError(f"A/B mode: pick one of {sorted(AB_MODES)}, got {mode!r}")


def ab_label(config: TrainConfig, mode: str) -> str:
    """What distinguishes this side: its method, or its negative prompt."""
    if mode in AB_METHOD_PAIRS:
        return METHOD_LABELS.get(config.guidance.method, config.guidance.method)
    return f"negative {config.prompt.negative!r}" if config.prompt.negative else "no negative prompt"


def ab_metrics(view: JobView) -> dict[str, Any]:
    """A side's final (or current) figures: state, steps, losses, Gaussians, time, s/step, prior evaluations, and its
    distinguishing fields (its run by the run folder's name)."""
    config = from_yaml(view.config_yaml)
    last = view.last_step
    timed = [e.seconds for e in view.steps]
    steps = last.step if last else 0
    return {
        "run": view.run_dir.name, "state": view.state, "outcome": view.outcome,
        "method": config.guidance.method, "negative": config.prompt.negative, "seed": config.seed,
        "step": steps, "total_steps": view.total_steps,
        "loss": last.losses.get("total") if last else None,
        "loss_guidance": last.losses.get("guidance") if last else None,
        "n_gaussians": last.n_gaussians if last else None,
        "train_s": round(sum(timed), 2) if timed else None,
        "s_per_step": round(sum(timed) / len(timed), 4) if timed else None,
        "prior_samples": view.prior_samples,
        "prior_evals_per_view_step": (round(view.prior_samples / steps / config.cameras.batch_size, 2)
                                      if steps else None),
    }


def ab_image(view: JobView) -> Any:
    """The side's picture: its final views (front, side, back, side at the export's size) once exported, else its
    latest preview grid (or None)."""
    if view.finished:
        final = views_image(read_run(view.run_dir).views)
        if final is not None:
            return final
    return view.preview


# The table's rows: (label, the ``ab_metrics`` key, format).
TABLE_ROWS = (
    ("state", "outcome", "{}"), ("steps", "step", "{}"), ("training time (s)", "train_s", "{:.1f}"),
    ("s / step", "s_per_step", "{:.3f}"), ("prior evaluations (samples)", "prior_samples", "{:,}"),
    ("prior evaluations per view per step", "prior_evals_per_view_step", "{:.2f}"),
    ("Gaussians", "n_gaussians", "{:,}"), ("final guidance loss", "loss_guidance", "{:.4g}"),
)


def ab_table(labels: tuple[str, str], metrics: tuple[dict[str, Any], dict[str, Any]],
             psnr_db: float | None) -> pd.DataFrame:
    """The two sides' figures as a table (a row per figure, a column per side), the PSNR between their final views
    first (the same value in both columns: it compares the two)."""
    shown = "—" if psnr_db is None else ("identical" if psnr_db == float("inf") else f"{psnr_db:.2f}")
    rows = [["PSNR of the final views, A to B (dB)", shown, shown]]
    for label, key, fmt in TABLE_ROWS:
        rows.append([label, *("—" if m.get(key) in (None, "") else fmt.format(m[key]) for m in metrics)])
    return pd.DataFrame(rows, columns=["", f"A — {labels[0]}", f"B — {labels[1]}"])


class ABHandlers:
    """The A/B run over the app's job manager; ``guidance`` resolves ``@NAME`` negatives of both libraries."""

    def __init__(self, app: AppHandlers, guidance: GuidanceHandlers) -> None:
        self.app = app
        self.guidance = guidance

    @user_errors
    def ab_run(
        self,
        prompt: str,
        negative: str,
        preset: str,
        model: str,
        mode: str,
        steps: float,
        seed: float,
        extra_overrides: str,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        """Queue A and B for this session and stream both (``AB_OUTPUTS``) until both have ended."""
        try:
            negative_text = self.guidance.resolve_negative(negative, request)
        except ConfigError as err:
            raise gr.Error(str(err)) from None
        base = self.app.resolve_form({"prompt": prompt, "negative": negative_text, "preset": preset, "model": model,
                                      "steps": steps, "seed": seed, "export_mesh": False,
                                      "extra_overrides": extra_overrides})
        try:
            configs = ab_configs(base, mode)
        except ConfigError as err:
            raise gr.Error(str(err)) from None
        owner = self.app.owner_of(request)
        views = [self.app.jobs.submit(config, session=owner, allow_demo=True) for config in configs]
        sent = [-1, -1]
        while True:
            yield self.render(views, mode, sent)
            if all(view.finished for view in views):
                return
            time.sleep(self.app.stream_interval_s)
            waiting = next(i for i, view in enumerate(views) if not view.finished)
            views[waiting] = self.app.jobs.wait(views[waiting].id, views[waiting].version, timeout_s=1.0)
            views = [self.app.jobs.view(view.id) for view in views]

    def render(self, views: list[JobView], mode: str, sent: list[int]) -> tuple[Any, ...]:
        """``AB_OUTPUTS`` for the two snapshots; until both have ended a picture is sent only when it changed
        (``sent`` tracks that), and the last update holds both pictures (what an API caller receives). Pictures are
        arrays (the runs' final views), never a server file."""
        labels = tuple(ab_label(from_yaml(view.config_yaml), mode) for view in views)
        status = "".join(
            f"<div><b>{side} — {html.escape(label)}</b>{status_html(view)}</div>"
            for side, label, view in zip("AB", labels, views)
        )
        images = []
        final = all(view.finished for view in views)
        for i, view in enumerate(views):
            key = -2 if view.finished else view.preview_step
            images.append(gr.skip() if sent[i] == key and not final else ab_image(view))
            sent[i] = key
        metrics = [ab_metrics(view) for view in views]
        psnr_db = views_psnr(*(read_run(view.run_dir).views for view in views)) if final else None
        return (status, *images, *metrics, ab_table(labels, tuple(metrics), psnr_db))
