"""The analytic multi-view prior (DESIGN §5): the exact denoiser of a finite set of posed images.

For dataset images y_k (pixels in [-1, 1], [3, R, R]) and a prior π over them (the conditioning), the data
distribution at noise level t is the kernel-smoothed mixture p(x₀) = Σ_k π_k N(x₀; y_k, σ_t²I). Noised to ᾱ_t,
x_t | k ~ N(√ᾱ_t y_k, v_t I) with v_t = ᾱ_t σ_t² + 1 − ᾱ_t, so the posterior mean is closed-form:
    p(k|x_t) = softmax_k(log π_k − ‖x_t − √ᾱ_t·y_k‖² / (2 v_t)),   ȳ = Σ_k p(k|x_t) y_k,
    E[x₀|x_t] = ȳ + (√ᾱ_t σ_t² / v_t)·(x_t − √ᾱ_t ȳ),
    ε̂ = (x_t − √ᾱ_t·E[x₀|x_t]) / √(1−ᾱ_t).
With σ_t = 0 this is DESIGN §5's formula, the denoiser of the images themselves. Under it the x̂₀ estimate snaps
to a dataset image at *every* noise level, so ISM's gradient — exactly λ·(x̂₀(x_s, s) − x̂₀(x_t, t)) since x_t is
one DDIM step from x_s — vanishes wherever both estimates pick the same image, and ISM never refines an image.

The kernel (``ModelConfig.multiview_kernel``):
- ``"constant"``: σ_t = ``multiview_sigma`` at every t, one mixture for all noise levels (an exact diffusion).
  A clean input x₀ (a render) is kept in the fraction k_t = σ²·SNR_t / (σ²·SNR_t + 1) (SNR_t = ᾱ_t/(1−ᾱ_t)) and
  the rest of its deviation d from the nearest image is read as *noise*: ε̂ ≈ (1 − k_t)·√SNR_t·d, e.g. 2.7·d at
  t = 0 for σ = 0.1. ISM's deterministic inversion carries that deviation to x_t, where the posterior spreads
  over neighbouring views, so ISM settles on a blur of views (docs/BENCHMARKS.md measures it).
- ``"snr"`` (default): σ_t² = (SNR_t/SNR_c)^β / SNR_t with SNR_c the SNR at t_c = ``multiview_keep_t`` and
  β = ``multiview_keep_sharpness``. Then k_t = sigmoid(β·log(SNR_t/SNR_c)): the denoiser keeps a clean input's
  structure at small t (k → 1; the deviation's share of ε̂, (1 − k_t)·√SNR_t·d, stays below about √SNR_c·d and
  vanishes as t → 0) and snaps to the images at large t (k → 0), half and half at t_c — the way a real diffusion
  model generalises at fine noise and produces content at coarse noise. ISM's gradient, λ·(x̂₀(x_s) − x̂₀(x_t)),
  is then ≈ λ·(k_s − k_t)·(x₀ − ȳ): a full pull towards the images exactly when the interval [s, t] spans the
  transition, whose width in log SNR is about 4.4/β (k from 0.9 to 0.1). This is a family of denoisers, one
  mixture per noise level, not the score of one p(x₀); at every t it is the exact denoiser of that t's mixture
  (tests compare it with Tweedie's formula on the mixture with σ = σ_t).
Distances are evaluated in float64 with log-sum-exp, expanding ‖x_t − √ᾱ y_k‖² = ‖x_t‖² − 2√ᾱ⟨x_t, y_k⟩ +
ᾱ‖y_k‖² (the first term cancels in the softmax) so that they are one matmul.

Conditioning is a weight vector [K] over the dataset's images (uniform over the selected ones). Mixing weight
vectors linearly mixes the priors, so view-prompt interpolation and Perp-Neg keep their meaning; rows are clamped
at 0 and renormalised before use.

Prompt matching (:meth:`MultiViewPrior.encode_prompts`): a trailing ", <word> view" is stripped; the rest selects
the objects whose caption equals it, or, if none does, whose caption contains it or is contained in it
(case-insensitive); the empty prompt selects all objects. No match raises :class:`PriorError` listing the
captions (``guidance.prompts.encode_prompt_set`` turns that into "unconditional" for negative prompts).
View words then keep the selected objects' images whose camera lies in the sector, with ``cameras.py``'s angles
(azimuth 0 = front, measured about +z; polar from +z):
- overhead: polar < 30° (takes precedence over the azimuth sectors);
- front: |azimuth| < 45°;  side: 45° ≤ |azimuth| ≤ 135°;  back: |azimuth| > 135°.
If a sector holds none of the selected images the view word is ignored (with a warning).

Camera conditioning (``ModelConfig.multiview_camera_sigma_deg`` = τ > 0), as camera-conditioned multi-view diffusion
models (MVDream, Zero-1-to-3) have it: the trainer passes each render's camera direction as ``control``
(:meth:`MultiViewPrior.camera_control`, through ``priors.base.camera_control_fn``), and every branch's weights
(positive, negative, inverse) are multiplied by exp(−θ_k²/2τ²), θ_k the angle between the render's and image k's
viewing directions, then renormalised. Without it the prior sees only the text and the view prompts' 90° sectors,
so a render's pseudo-GT is the pixel-nearest image of the sector, whichever camera it came from.

The dataset (NeRF-synthetic layout) is read by :mod:`lucid_app.priors.nerf_dataset`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from lucid_app.config import ModelConfig
from lucid_app.priors.base import PriorError
from lucid_app.priors.model_ref import ModelRef
from lucid_app.priors.nerf_dataset import MultiViewObject, load_object, object_folders, resize_images
from lucid_app.render.cameras import CameraBatch, orbit_positions

logger = logging.getLogger(__name__)

# Stable Diffusion's training schedule (scaled-linear β from 0.00085 to 0.012 over 1000 steps).
SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
OVERHEAD_MAX_POLAR_DEG = 30.0
FRONT_MAX_ABS_AZIMUTH_DEG = 45.0
BACK_MIN_ABS_AZIMUTH_DEG = 135.0
VIEW_WORDS = ("front", "side", "back", "overhead")
# Datasets read as ground truth (the quality benchmark, the prior doctor) are composited on white.
WHITE = (1.0, 1.0, 1.0)
_VIEW_SUFFIX = re.compile(r",\s*(\w+)\s+view\s*$", re.IGNORECASE)


def split_view_suffix(text: str) -> tuple[str, str | None]:
    """"a chair, front view" → ("a chair", "front"); text without a ", <word> view" suffix → (text, None)."""
    match = _VIEW_SUFFIX.search(text)
    if match is None:
        return text.strip(), None
    return text[: match.start()].strip(), match.group(1).lower()


def view_sector_mask(view: str, azimuth_deg: torch.Tensor, polar_deg: torch.Tensor) -> torch.Tensor:
    """[K] bool: images whose camera lies in the sector of ``view`` (bounds in the module docstring)."""
    overhead = polar_deg < OVERHEAD_MAX_POLAR_DEG
    az = azimuth_deg.abs()
    sectors = {
        "overhead": overhead,
        "front": ~overhead & (az < FRONT_MAX_ABS_AZIMUTH_DEG),
        "side": ~overhead & (az >= FRONT_MAX_ABS_AZIMUTH_DEG) & (az <= BACK_MIN_ABS_AZIMUTH_DEG),
        "back": ~overhead & (az > BACK_MIN_ABS_AZIMUTH_DEG),
    }
    return sectors[view]


def orbit_centres(cameras: CameraBatch) -> torch.Tensor:
    """[C, 3] camera centres from the batch's orbit coordinates (about the origin)."""
    return orbit_positions(cameras.azimuth_deg, cameras.polar_deg, cameras.radius)


def sd_alphas_cumprod() -> torch.Tensor:
    """[1000] ᾱ of Stable Diffusion's scaled-linear schedule, from diffusers' DDPMScheduler."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD_SCHEDULE).alphas_cumprod.to(torch.float32)


class MultiViewPrior:
    """A :class:`DiffusionPrior` over pixels [C, 3, R, R] in [-1, 1] with the closed-form denoiser above.

    Attributes:
        objects: the dataset's objects (train/test images and cameras, for benchmarks).
        images: [K, 3, R, R] all training images in [-1, 1] (the y_k), object after object.
        object_index: [K] which object each image belongs to.
        azimuth_deg, polar_deg: [K] orbit angles of each image's camera (``cameras.orbit_angles``).
    """

    def __init__(
        self,
        objects: list[MultiViewObject],
        name: str,
        device: torch.device | str = "cpu",
        sigma: float = 0.0,
        keep_t: int | None = None,
        keep_sharpness: float = 2.0,
        camera_sigma_deg: float = 0.0,
    ) -> None:
        """``keep_t`` None: the constant kernel σ_t = ``sigma``; an int: the ``"snr"`` kernel with t_c = keep_t and
        β = ``keep_sharpness``. ``camera_sigma_deg`` > 0 turns camera conditioning on (module docstring)."""
        if not objects:
            raise PriorError("multi-view prior: the dataset holds no object")
        if sigma < 0:
            raise PriorError(f"multi-view prior: multiview_sigma must be >= 0, got {sigma}")
        self.name = name
        self.sigma = float(sigma)
        self.device = torch.device(device)
        self.objects = objects
        self.resolution = int(objects[0].train_images.shape[1])
        self.alphas_cumprod = sd_alphas_cumprod().to(self.device)
        self.num_train_timesteps = int(self.alphas_cumprod.shape[0])
        if keep_t is not None and not 0 <= keep_t < self.num_train_timesteps:
            raise PriorError(f"multi-view prior: multiview_keep_t must be in [0, {self.num_train_timesteps}), "
                             f"got {keep_t}")
        if keep_sharpness <= 0:
            raise PriorError(f"multi-view prior: multiview_keep_sharpness must be > 0, got {keep_sharpness}")
        if camera_sigma_deg < 0:
            raise PriorError(f"multi-view prior: multiview_camera_sigma_deg must be >= 0, got {camera_sigma_deg}")
        self.keep_t = keep_t
        self.keep_sharpness = float(keep_sharpness)
        self.camera_sigma_deg = float(camera_sigma_deg)
        self.conditions_on_camera = self.camera_sigma_deg > 0
        rgb = torch.cat([obj.train_images for obj in objects])
        self.images = (rgb.permute(0, 3, 1, 2) * 2.0 - 1.0).to(self.device)
        self.object_index = torch.cat(
            [torch.full((obj.train_images.shape[0],), i, dtype=torch.long) for i, obj in enumerate(objects)]
        )
        self.azimuth_deg = torch.cat([obj.train_cameras.azimuth_deg for obj in objects])
        self.polar_deg = torch.cat([obj.train_cameras.polar_deg for obj in objects])
        self.view_dirs = F.normalize(torch.cat([orbit_centres(obj.train_cameras) for obj in objects]), dim=-1)
        flat = self.images.reshape(self.images.shape[0], -1).to(torch.float64)
        self._flat64 = flat
        self._sq_norms = (flat * flat).sum(dim=1)

    @property
    def captions(self) -> list[str]:
        return [obj.caption for obj in self.objects]

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    # --- DiffusionPrior -------------------------------------------------------------------------------------
    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """Renders [C, H, W, 3] in [0, 1] → x₀ [C, 3, R, R] in [-1, 1] (antialiased resize, differentiable)."""
        return resize_images(rgb, self.resolution).permute(0, 3, 1, 2) * 2.0 - 1.0

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x₀ [C, 3, R, R] → images [C, R, R, 3] in [0, 1] (no gradient)."""
        return ((x0.detach() + 1.0) * 0.5).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Prompts → [P, K] weight vectors over the images (module docstring for the matching rules)."""
        return torch.stack([self._match(text) for text in texts]).to(self.device)

    def camera_control(self, cameras: CameraBatch) -> torch.Tensor:
        """[C] cameras → [C, 3] unit directions from the origin to their centres (``predict_noise``'s control)."""
        return F.normalize(orbit_centres(cameras), dim=-1).to(self.device)

    def condition_on_cameras(self, cond: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """[B, K] weights × exp(−θ²/2τ²) per image, renormalised (log domain: a row never vanishes).

        Args:
            cond: [B, K] non-negative weights; directions: [B, 3] unit camera directions (:meth:`camera_control`).
        """
        if directions.shape != (cond.shape[0], 3):
            raise ValueError("multi-view prior: control must be [B, 3] camera directions, "
                             f"got {tuple(directions.shape)}")
        cosine = (directions.to(torch.float64) @ self.view_dirs.to(directions.device, torch.float64).T).clamp(-1.0, 1.0)
        theta_deg = torch.rad2deg(torch.arccos(cosine))
        logits = torch.log(cond.to(torch.float64).clamp_min(0.0)) - 0.5 * (theta_deg / self.camera_sigma_deg) ** 2
        return torch.softmax(logits, dim=1).to(cond.dtype)

    def predict_noise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        control: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε̂ = (x_t − √ᾱ_t·E[x₀|x_t]) / √(1−ᾱ_t) per sample.

        Args:
            x_t: [B, 3, R, R]; t: [B] integer timesteps; cond: [B, K] weight vectors.
            control: [B, 3] camera directions (:meth:`camera_control`), used when camera conditioning is on.

        Returns:
            [B, 3, R, R] in the dtype of ``x_t``.
        """
        if control is not None and self.conditions_on_camera:
            cond = self.condition_on_cameras(cond, control)
        alpha = self.alphas_cumprod.to(x_t.device)[t.long()].to(torch.float64).reshape(-1, 1)
        x_flat = x_t.detach().reshape(x_t.shape[0], -1).to(torch.float64)
        mean = self._posterior_mean64(x_t, t, cond)
        eps = (x_flat - alpha.sqrt() * mean) / (1.0 - alpha).sqrt()
        return eps.reshape(x_t.shape).to(x_t.dtype)

    # --- closed form ----------------------------------------------------------------------------------------
    def kernel_variance(self, alpha: torch.Tensor) -> torch.Tensor:
        """σ_t² for ᾱ_t values (any shape, float64 in, same shape out): the module docstring's kernels."""
        if self.keep_t is None:
            return torch.full_like(alpha, self.sigma**2)
        alpha_c = self.alphas_cumprod[self.keep_t].to(device=alpha.device, dtype=torch.float64)
        snr = alpha / (1.0 - alpha)
        return (snr / (alpha_c / (1.0 - alpha_c))) ** self.keep_sharpness / snr

    def posterior_logits(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """[B, K] log-posterior (unnormalised) over the images: log π_k − ‖x_t − √ᾱ y_k‖²/(2 v_t) + const(x_t)."""
        with torch.no_grad():
            alpha = self.alphas_cumprod.to(x_t.device)[t.long()].to(torch.float64).reshape(-1, 1)
            x_flat = x_t.reshape(x_t.shape[0], -1).to(torch.float64)
            ys = self._flat64.to(x_t.device)
            cross = x_flat @ ys.T
            sq_dist = alpha * self._sq_norms.to(x_t.device)[None, :] - 2.0 * alpha.sqrt() * cross
            weights = cond.to(device=x_t.device, dtype=torch.float64).clamp_min(0.0)
            total = weights.sum(dim=1, keepdim=True)
            if bool((total <= 0).any()):
                raise ValueError("multi-view prior: a conditioning row has no positive weight")
            variance = alpha * self.kernel_variance(alpha) + (1.0 - alpha)
            return torch.log(weights / total) - sq_dist / (2.0 * variance)

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """E[x₀|x_t] [B, 3, R, R] under the prior π = cond (module docstring), in the dtype of ``x_t``."""
        return self._posterior_mean64(x_t, t, cond).reshape(x_t.shape).to(x_t.dtype)

    def _posterior_mean64(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """[B, R*R*3] float64 E[x₀|x_t] (module docstring)."""
        probs = torch.softmax(self.posterior_logits(x_t, t, cond), dim=1)
        y_bar = probs @ self._flat64.to(x_t.device)
        if self.keep_t is None and self.sigma == 0.0:
            return y_bar
        alpha = self.alphas_cumprod.to(x_t.device)[t.long()].to(torch.float64).reshape(-1, 1)
        sigma2 = self.kernel_variance(alpha)
        gain = alpha.sqrt() * sigma2 / (alpha * sigma2 + 1.0 - alpha)
        x_flat = x_t.detach().reshape(x_t.shape[0], -1).to(torch.float64)
        return y_bar + gain * (x_flat - alpha.sqrt() * y_bar)

    # --- prompt matching ------------------------------------------------------------------------------------
    def _match(self, text: str) -> torch.Tensor:
        subject, view = split_view_suffix(text)
        selected = self._select_objects(subject, text)
        mask = selected[self.object_index]
        if view in VIEW_WORDS:
            in_sector = mask & view_sector_mask(view, self.azimuth_deg, self.polar_deg)
            if bool(in_sector.any()):
                mask = in_sector
            else:
                logger.warning("prompt %r: no image in the %r sector; using all the object's views", text, view)
        elif view is not None:
            logger.debug("prompt %r: view word %r is not one of %s; ignored", text, view, list(VIEW_WORDS))
        weights = mask.to(torch.float32)
        return weights / weights.sum()

    def _select_objects(self, subject: str, text: str) -> torch.Tensor:
        """[num_objects] bool of the objects the prompt subject selects; PriorError if none."""
        key = subject.lower()
        captions = [c.lower() for c in self.captions]
        if key == "":
            return torch.ones(len(captions), dtype=torch.bool)
        exact = [c == key for c in captions]
        if any(exact):
            return torch.tensor(exact)
        loose = [key in c or (c != "" and c in key) for c in captions]
        if any(loose):
            return torch.tensor(loose)
        raise PriorError(
            f"multi-view prior: prompt {text!r} matches no caption; captions are: "
            + "; ".join(repr(c) for c in self.captions)
        )


def load_multiview_prior(
    path: str | Path,
    config: ModelConfig,
    device: torch.device | str = "cpu",
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> MultiViewPrior:
    """Load a NeRF-synthetic style dataset (one object or a folder of objects) as a :class:`MultiViewPrior`.

    Args:
        path: dataset folder (without the ``multiview:`` prefix).
        config: uses ``multiview_resolution`` (R) and the kernel (``multiview_kernel``, ``multiview_keep_t``,
            ``multiview_sigma``).
        device: where the prior's tensors live.
        background: colour the alpha channel is composited on (default white).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise PriorError(f"multi-view dataset folder {str(root)!r} does not exist")
    objects = [load_object(folder, config.multiview_resolution, background) for folder in object_folders(root)]
    logger.info(
        "multi-view prior %s: %d objects, %d images at %d px",
        root, len(objects), sum(o.train_images.shape[0] for o in objects), config.multiview_resolution,
    )
    keep_t = config.multiview_keep_t if config.multiview_kernel == "snr" else None
    return MultiViewPrior(
        objects, name=ModelRef("multiview", str(path)).id, device=device, sigma=config.multiview_sigma, keep_t=keep_t,
        keep_sharpness=config.multiview_keep_sharpness, camera_sigma_deg=config.multiview_camera_sigma_deg,
    )


# ---------------------------------------------------------------------------- a dataset's objects, as ground truth


def select_object_index(dataset: MultiViewPrior, prompt: str) -> int:
    """Index in ``dataset.objects`` of the one object ``prompt`` selects (the multi-view prior's caption matching:
    a trailing ", <word> view" dropped, exact caption first, then containment, case-insensitive).

    Raises:
        ValueError: the prompt selects several objects (PriorError: it matches none).
    """
    weights = dataset.encode_prompts([prompt])[0].cpu()
    indices = sorted({int(i) for i in dataset.object_index[weights > 0]})
    if len(indices) != 1:
        captions = [dataset.objects[i].caption for i in indices]
        raise ValueError(f"prompt {prompt!r} selects {len(indices)} objects ({captions}); name exactly one")
    return indices[0]


def select_object(prior: MultiViewPrior, prompt: str) -> MultiViewObject:
    """The one object of ``prior`` that ``prompt`` selects (:func:`select_object_index`), with its test split.

    Raises:
        ValueError: the prompt selects several objects, or the object has no test split.
    """
    return with_test_split(prior.objects[select_object_index(prior, prompt)])


def with_test_split(obj: MultiViewObject) -> MultiViewObject:
    """``obj``, which has a test split.

    Raises:
        ValueError: it has none (no ``transforms_test.json``).
    """
    if obj.test_images is None or obj.test_cameras is None:
        raise ValueError(f"object {obj.caption!r} has no transforms_test.json: nothing to score against")
    return obj


def read_dataset(root: Path, size_px: int) -> MultiViewPrior:
    """The dataset at ``root`` read with the multi-view reader at ``size_px`` (images on white). Only its objects
    and caption matching are used: it is the ground truth of the quality benchmark and the prior doctor, not a
    prior."""
    return load_multiview_prior(root, ModelConfig(multiview_resolution=size_px), "cpu", background=WHITE)
