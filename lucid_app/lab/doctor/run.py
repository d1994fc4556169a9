"""One doctor run on a loaded prior: clean views, the measurement, and its JSON summary (:mod:`lucid_app.lab.doctor`).

The caller resolves the config (the guidance settings of the preset a user trains with, as ``generate`` resolves
them) and loads the prior; both the ``doctor`` command and the app's panel do, then call :func:`diagnose`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lucid_app.config import TrainConfig
from lucid_app.guidance.prompts import encode_prompt_set
from lucid_app.lab.doctor.measure import DoctorSettings, measure
from lucid_app.lab.doctor.references import dataset_references, sample_references
from lucid_app.lab.doctor.report import summary
from lucid_app.priors.base import DiffusionPrior


def diagnose(
    prior: DiffusionPrior,
    config: TrainConfig,
    settings: DoctorSettings,
    dataset: str | Path | None = None,
    views: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure ``settings`` on ``prior`` with ``config``'s prompt and guidance settings; the JSON summary
    (:func:`lucid_app.lab.doctor.report.summary`) with the references and settings it used.

    Args:
        prior: the loaded prior.
        config: the resolved run config (its prompt selects the dataset object; its guidance section is measured).
        settings: timesteps, methods, seeds, perturbations and their amplitude.
        dataset: a NeRF-synthetic style dataset whose captioned object's test views are the clean views; None: the
            prior's own DDIM samples of the prompt.
        views: how many clean views.
        progress: called with (evaluations done, total).

    Raises:
        ValueError: settings that cannot be measured on this prior, or a prompt that selects several objects.
        PriorError: a dataset that cannot be read, or no caption that matches the prompt.
    """
    settings.check(prior.num_train_timesteps)
    if dataset is not None:
        refs = dataset_references(prior, dataset, config.prompt.text, views, config.render.width)
    else:
        refs = sample_references(prior, config, views)
    prompts = encode_prompt_set(prior, config.prompt)
    measurement = measure(prior, refs.x0, refs.azimuth_deg, prompts, config.guidance, settings, refs.control,
                          progress=progress)
    guidance = config.guidance
    extra = {
        "prompt": config.prompt.text,
        "references": {"source": refs.source, "caption": refs.caption,
                       "dataset": None if dataset is None else str(dataset), "indices": list(refs.indices),
                       "azimuth_deg": [round(float(a), 3) for a in refs.azimuth_deg]},
        "settings": {"seeds": settings.seeds, "perturbations": list(settings.perturbations),
                     "amplitude": settings.amplitude, "guidance_scale": guidance.guidance_scale,
                     "lambda_guidance": guidance.lambda_guidance, "delta_t": guidance.delta_t,
                     "xs_delta_t": guidance.xs_delta_t, "xs_inv_steps": guidance.xs_inv_steps,
                     "denoise_guidance_scale": guidance.denoise_guidance_scale,
                     "offset_noise": guidance.offset_noise, "negative": config.prompt.negative},
    }
    return summary(measurement, extra)
