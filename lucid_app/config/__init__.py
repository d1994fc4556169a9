"""The one configuration schema of lucid-app, and its strict loader.

Dataclasses are the schema (:mod:`lucid_app.config.schema`: the config classes, the bound types of their fields and
the limits). YAML presets, ``--set a.b=value`` overrides and UI fields are partial overrides applied through
:func:`from_dict` (:mod:`lucid_app.config.loader`, which also serialises) / :func:`apply_overrides`
(:mod:`lucid_app.config.overrides`), which reject unknown keys (naming the valid ones) and values of the wrong type
or out of bounds (naming the field): every value is checked by one coercer (:mod:`lucid_app.config.coerce`).
Every config object is frozen: training never mutates it; anything that changes with the step (camera ranges, δ_T,
the t range, learning rates) is a function of the step computed from these numbers.

Import from here (``from lucid_app.config import TrainConfig, from_yaml``): this package re-exports every public name
of the schema, the loader and the overrides (the coercer's helpers serve those modules only).
"""

from __future__ import annotations

from lucid_app.config.coerce import MAX_NESTING, REMOVED_KEYS
from lucid_app.config.loader import (
    deep_merge,
    from_dict,
    from_yaml,
    load_section,
    parse_yaml,
    replace,
    to_dict,
    to_yaml,
)
from lucid_app.config.overrides import apply_overrides, parse_override
from lucid_app.config.schema import (
    DEFAULT_MODEL,
    MAX_BATCH_SIZE,
    MAX_PATH_CHARS,
    MAX_POINTS,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEXT_CHARS,
    MAX_TIMESTEP,
    PAPER_NEGATIVE,
    RENDER_SIZE_RANGE_PX,
    AvatarConfig,
    AzimuthDeg,
    CameraConfig,
    ConfigError,
    ControlChange,
    Decay,
    DensifyConfig,
    ExportConfig,
    Factor,
    FovyRad,
    Fraction,
    GuidanceConfig,
    InitConfig,
    Jitter,
    LearningRate,
    Length,
    LossConfig,
    ModelConfig,
    OpenFraction,
    OptimConfig,
    Ordered,
    PathText,
    PerpNegWeight,
    PolarDeg,
    PromptChange,
    PromptConfig,
    RenderConfig,
    RenderSize,
    Rgb,
    StepIndex,
    Steps,
    Text,
    Timestep,
    TrainConfig,
    Weight,
)

__all__ = [
    # schema: limits and defaults
    "DEFAULT_MODEL",
    "MAX_BATCH_SIZE",
    "MAX_PATH_CHARS",
    "MAX_POINTS",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_TEXT_CHARS",
    "MAX_TIMESTEP",
    "PAPER_NEGATIVE",
    "RENDER_SIZE_RANGE_PX",
    # schema: bound types
    "AzimuthDeg",
    "Decay",
    "Factor",
    "FovyRad",
    "Fraction",
    "Jitter",
    "LearningRate",
    "Length",
    "OpenFraction",
    "Ordered",
    "PathText",
    "PerpNegWeight",
    "PolarDeg",
    "RenderSize",
    "Rgb",
    "StepIndex",
    "Steps",
    "Text",
    "Timestep",
    "Weight",
    # schema: config classes and their error
    "AvatarConfig",
    "CameraConfig",
    "ConfigError",
    "ControlChange",
    "DensifyConfig",
    "ExportConfig",
    "GuidanceConfig",
    "InitConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PromptChange",
    "PromptConfig",
    "RenderConfig",
    "TrainConfig",
    # loader, overrides and the coercer's limits
    "MAX_NESTING",
    "REMOVED_KEYS",
    "apply_overrides",
    "deep_merge",
    "from_dict",
    "from_yaml",
    "load_section",
    "parse_override",
    "parse_yaml",
    "replace",
    "to_dict",
    "to_yaml",
]
