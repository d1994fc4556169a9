"""The text-to-3D form as one table: each field's config key(s), its kind and its limits.

Everything about the form derives from :data:`FIELDS`: the order of ``AppHandlers.generate``'s parameters (and so of
the ``/generate`` API), the values shown for a preset (:func:`form_values`), the ``section.key=value`` overrides a
submitted form becomes (:func:`form_overrides`) and the fields a preset fills in (:data:`PRESET_FIELDS`). Adding a
field is one row here, one component in ``layout.py`` and one parameter of ``generate`` (a test checks that the
parameters match this table). Limits are the schema's own (:mod:`lucid_app.config`), never copies.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from functools import reduce
from typing import Any, Literal

from lucid_app.config import (
    MAX_OVERRIDES,
    MAX_STEPS,
    RENDER_SIZE_RANGE_PX,
    ConfigError,
    TrainConfig,
    check_override_count,
    check_value,
)
from lucid_app.config.presets import list_presets, load_config

DEFAULT_PRESET = "demo"
DEMO_PROMPTS = ("a red toy car", "a potted flower", "a snowman")
# The span of the guidance-scale and δ_T sliders (the form's and the live ones): the useful part of the schema's bounds
# (up to 1000 and 999), which still apply to a value typed into the API; a test checks the spans lie within them.
SLIDER_RANGES: dict[str, tuple[float, float]] = {"guidance_scale": (0.0, 30.0), "delta_t": (1, 200)}
# Most characters of the free-form overrides box: room for a line per config key with long prompts and paths.
MAX_EXTRA_CHARS = 100_000
# The mesh checkbox is the app's own choice, not the preset's: the app exports a mesh by default (issue 9).
APP_EXPORTS_MESH = True


@dataclass(frozen=True)
class FormField:
    """One field of the text-to-3D form.

    Args:
        name: the component's and ``generate``'s parameter name.
        keys: the config keys it sets (``resolution`` sets both render sizes); empty for the preset and the extra lines,
            which ``AppHandlers.resolve_form`` reads itself.
        kind: what a submitted value must be (:func:`checked_value`): ``text`` and ``choice`` a string, ``bool`` true or
            false, ``int`` a whole number, ``float`` a finite one. API clients send raw JSON (the events skip
            Gradio's own conversion, which would round 2.5 to 2), so this is the one check of every field.
        end: for the two ends of a (min, max) range key: 0 = min, 1 = max.
        limits: (lowest, highest) accepted, from the schema; ``unit`` follows them in the error.
        explicit: passed to ``resolve_config`` as its own argument (prompt, negative, model), not as an override.
        from_preset: picking a preset fills the field in.
    """

    name: str
    keys: tuple[str, ...] = ()
    kind: Literal["text", "choice", "bool", "int", "float"] = "float"
    end: Literal[0, 1] | None = None
    limits: tuple[int, int] | None = None
    unit: str = ""
    explicit: bool = False
    from_preset: bool = True


# In the order of ``generate``'s parameters. Camera ranges are where each range starts (they widen from there towards
# the preset's limits, see cameras.py).
FIELDS = (
    FormField("prompt", ("prompt.text",), "text", explicit=True, from_preset=False),
    FormField("negative", ("prompt.negative",), "text", explicit=True, from_preset=False),
    FormField("preset", (), "choice", from_preset=False),
    FormField("model", ("model.id",), "choice", explicit=True, from_preset=False),
    FormField("method", ("guidance.method",), "choice"),
    FormField("steps", ("optim.steps",), "int", limits=(1, MAX_STEPS)),
    FormField("seed", ("seed",), "int"),
    FormField("init_shape", ("init.shape",), "choice"),
    FormField("perp_neg", ("guidance.perp_neg",), "bool"),
    FormField("export_mesh", ("export.mesh",), "bool", from_preset=False),
    FormField("guidance_scale", ("guidance.guidance_scale",)),
    FormField("delta_t", ("guidance.delta_t",), "int"),
    FormField("preview_every", ("export.preview_every",), "int"),
    FormField("resolution", ("render.width", "render.height"), "int", limits=RENDER_SIZE_RANGE_PX, unit=" px"),
    FormField("batch_size", ("cameras.batch_size",), "int"),
    FormField("radius_min", ("cameras.radius_range",), end=0),
    FormField("radius_max", ("cameras.radius_range",), end=1),
    FormField("polar_min_deg", ("cameras.polar_range_deg",), end=0),
    FormField("polar_max_deg", ("cameras.polar_range_deg",), end=1),
    FormField("fovy_min_rad", ("cameras.fovy_range_rad",), end=0),
    FormField("fovy_max_rad", ("cameras.fovy_range_rad",), end=1),
    FormField("delta_t_start", ("guidance.delta_t_start",), "int"),
    FormField("xs_delta_t", ("guidance.xs_delta_t",), "int"),
    FormField("xs_inv_steps", ("guidance.xs_inv_steps",), "int"),
    FormField("lambda_guidance", ("guidance.lambda_guidance",)),
    FormField("extra_overrides", (), "text", from_preset=False),
)
FIELD = {f.name: f for f in FIELDS}
FORM_FIELDS = tuple(f.name for f in FIELDS)
# Fields a preset fills in when it is picked (then the prompt, only when it is empty).
PRESET_FIELDS = tuple(f.name for f in FIELDS if f.from_preset)
# Range key → (the min field, the max field).
RANGE_KEYS = {f.keys[0]: (f.name, FIELDS[i + 1].name) for i, f in enumerate(FIELDS) if f.end == 0}


def form_values(config: TrainConfig) -> dict[str, Any]:
    """The form fields' values for ``config`` (what the UI shows after a preset is picked)."""
    values: dict[str, Any] = {}
    for field in FIELDS:
        if not field.keys:
            continue
        value = reduce(getattr, field.keys[0].split("."), config)
        values[field.name] = value if field.end is None else value[field.end]
    return values


def checked_form(form: dict[str, Any]) -> dict[str, Any]:
    """The form's fields (those of :data:`FIELDS` it holds), each checked for its kind by :func:`checked_value`.

    Raises:
        ConfigError: a value of the wrong kind or out of its limits (naming the field).
    """
    return {field.name: checked_value(field, form[field.name]) for field in FIELDS if field.name in form}


def checked_value(field: FormField, value: Any) -> Any:
    """A submitted value of ``field``: None and "" stay as they are (not set); text and choices must be strings,
    booleans ``true``/``false`` (not "yes"), numbers finite and, for ``int``, whole, within ``field.limits``.

    Raises:
        ConfigError: naming the field and the value.
    """
    if value is None or value == "":
        return value
    if field.kind in ("text", "choice"):
        if not isinstance(value, str):
            raise ConfigError(f"{field.name}: expected text, got {_shown(value)}")
        return value
    if field.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{field.name}: expected true or false, got {_shown(value)}")
        return value
    number = form_number(field.name, value, integer=field.kind == "int")
    if field.limits is not None and not field.limits[0] <= number <= field.limits[1]:
        lo, hi = field.limits
        raise ConfigError(f"{field.name} must be between {lo} and {hi}{field.unit}, got {number}")
    return number


def form_overrides(form: dict[str, Any]) -> list[str]:
    """``section.key=value`` overrides for every form field that has a value, then the free-form extra lines.

    Raises:
        ConfigError: a value of the wrong kind or out of range, an extra line that is not ``section.key=value``,
            more than ``MAX_OVERRIDES`` overrides in all (:mod:`lucid_app.config`).
    """
    form = checked_form(form)
    overrides = []
    for field in FIELDS:
        value = form.get(field.name)
        if not field.keys or field.explicit or field.end is not None or value is None or value == "":
            continue
        text = _yaml_value(value)
        overrides.extend(f"{key}={text}" for key in field.keys)
    for key, (lo, hi) in RANGE_KEYS.items():
        if form.get(lo) in (None, "") or form.get(hi) in (None, ""):
            continue
        low, high = form[lo], form[hi]
        if low > high:
            raise ConfigError(f"{key}: the minimum {low} is above the maximum {high}")
        overrides.append(f"{key}=[{low}, {high}]")
    overrides.extend(extra_lines(form.get("extra_overrides") or ""))
    check_override_count(len(overrides))
    return overrides


def extra_lines(text: str) -> list[str]:
    """The ``section.key=value`` lines of the form's free-form overrides (blank lines and ``#`` comments dropped).

    Raises:
        ConfigError: a text longer than :data:`MAX_EXTRA_CHARS` (checked before it is split), more than
            ``MAX_OVERRIDES`` lines (:mod:`lucid_app.config`), or a line that is not ``section.key=value``.
    """
    if len(text) > MAX_EXTRA_CHARS:
        raise ConfigError(f"extra_overrides: {len(text)} characters; at most {MAX_EXTRA_CHARS} are allowed")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) > MAX_OVERRIDES:
        raise ConfigError(f"extra_overrides: {len(lines)} lines; at most {MAX_OVERRIDES} are allowed")
    for line in lines:
        if "=" not in line:
            raise ConfigError(f"extra override {_shown(line)} must look like section.key=value")
    return lines


def form_number(name: str, value: Any, integer: bool = False) -> float | int:
    """A form field's number, checked: a number (not true/false), finite (JSON clients can send NaN), and whole when
    ``integer``.

    Raises:
        ConfigError: not a number, not finite, or not a whole number where one is needed (naming the field).
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a number, got {value}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name}: expected a number, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}: expected a finite number, got {value}")
    if not integer:
        return number
    if number != int(number):
        raise ConfigError(f"{name}: expected a whole number, got {value}")
    return int(number)


def bounded_number(name: str, value: Any, annotation: Any) -> float | int:
    """A number of a field outside the table, checked by :func:`form_number` (whole when ``annotation`` holds an int)
    and then against the schema bound type ``annotation`` (e.g. ``lucid_app.config.AzimuthDeg``).

    Raises:
        ConfigError: naming ``name``.
    """
    integer = typing.get_args(annotation)[0] is int
    return check_value(form_number(name, value, integer=integer), annotation, name)


def example_prompts() -> list[list[str]]:
    """[prompt, preset] pairs: the demo objects, then every preset that names a prompt."""
    examples = [[prompt, DEFAULT_PRESET] for prompt in DEMO_PROMPTS]
    for name in list_presets():
        try:
            text = load_config(name).prompt.text
        except ConfigError:
            continue
        if text and name != DEFAULT_PRESET:
            examples.append([text, name])
    return examples


def _shown(value: Any) -> str:
    """A submitted value in a message: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value)
