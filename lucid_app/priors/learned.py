"""The learned miniature prior (DESIGN §5b) as a :class:`~lucid_app.priors.base.DiffusionPrior`.

A folder written by ``python -m lucid_app train-prior`` (format: :mod:`lucid_app.priors.learned_folder`) holds a
small text-conditioned pixel-space UNet, its CLIP text encoder and tokenizer, and SD's DDPM schedule. Guidance sees
it exactly as it sees Stable Diffusion: x₀ lives in [C, 3, R, R] pixels in [-1, 1] (no autoencoder), prompts are
encoded by the same :class:`~lucid_app.priors.text.PromptEncoder`, ε̂ comes from one batched UNet call (converted
from v or x̂₀ with the saved scheduler config's ``prediction_type``, as Stable Diffusion's). It has no ControlNet
and no camera input: a ``control`` tensor is refused.

Every weight is frozen and kept in float32 (the model is small; half precision buys nothing), and is read with
``use_safetensors=True`` only (:mod:`lucid_app.config.trust`); the training state in the folder is never read here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from lucid_app.config import ModelConfig
from lucid_app.config.devices import resolve_device
from lucid_app.priors.base import PriorError
from lucid_app.priors.learned_folder import SCHEDULER_DIR, TEXT_ENCODER_DIR, TOKENIZER_DIR, UNET_DIR, read_metadata
from lucid_app.priors.nerf_dataset import resize_images
from lucid_app.priors.prediction import PredictionType, noise_from_model_output, prediction_type_of
from lucid_app.priors.text import PromptEncoder

logger = logging.getLogger(__name__)

# Errors transformers / diffusers raise for a missing, partial or damaged component folder.
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


class LearnedPrior:
    """A trained pixel-space prior behind the ``DiffusionPrior`` protocol.

    Attributes:
        resolution: R, the side of x₀ [C, 3, R, R].
        prediction_type: what the UNet outputs (ε, v or x̂₀); ``predict_noise`` always returns ε̂.
        captions: the captions it was trained on (from ``lucid_prior.json``; empty when built in memory).
        unet, text_encoder, tokenizer: the frozen components.
    """

    def __init__(
        self,
        name: str,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        alphas_cumprod: torch.Tensor,
        device: torch.device | str = "cpu",
        captions: list[str] | None = None,
        prediction_type: PredictionType = "epsilon",
    ) -> None:
        """``alphas_cumprod``: [T] ᾱ of the training schedule; ``prediction_type``: what the UNet was trained to
        predict; the modules are frozen and moved to ``device``."""
        self.name = name
        self.device = torch.device(device)
        self.unet = unet.requires_grad_(False).eval().float().to(self.device)
        self.text_encoder = text_encoder.requires_grad_(False).eval().float().to("cpu")
        self.tokenizer = tokenizer
        self.alphas_cumprod = alphas_cumprod.to(device=self.device, dtype=torch.float32)
        self.num_train_timesteps = int(self.alphas_cumprod.shape[0])
        sample_size = self.unet.config.sample_size
        self.resolution = int(sample_size if isinstance(sample_size, int) else sample_size[0])
        self.channels = int(self.unet.config.in_channels)
        self.captions = list(captions or [])
        self.prediction_type: PredictionType = prediction_type
        self._prompts = PromptEncoder(tokenizer, self.text_encoder, self.device, torch.float32, logger)

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """Renders [C, H, W, 3] in [0, 1] → x₀ [C, 3, R, R] in [-1, 1] (antialiased bilinear resize, with grad)."""
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"expected images [C, H, W, 3], got shape {tuple(rgb.shape)}")
        return resize_images(rgb.to(self.device), self.resolution).permute(0, 3, 1, 2) * 2.0 - 1.0

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x₀ [C, 3, R, R] → images [C, R, R, 3] float32 in [0, 1] (no gradient)."""
        return ((x0.detach().float() + 1.0) * 0.5).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Prompts → [P, 77, D] text-encoder states on ``device`` (cached per text; "" is unconditional)."""
        return self._prompts.encode(texts)

    @torch.no_grad()
    def predict_noise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        control: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε̂(x_t, t, cond) in one batched UNet call (no gradient; a v or x̂₀ output converted to ε̂).

        Args:
            x_t: [B, 3, R, R] noisy pixels.
            t: [B] integer timesteps in [0, T) (a scalar is broadcast).
            cond: [B, 77, D] rows of ``encode_prompts`` (possibly mixed).
            control: must be None: this prior has no ControlNet and no camera input.

        Returns:
            [B, 3, R, R] ε̂, same dtype as ``x_t``.

        Raises:
            ValueError: a ``control`` tensor, or mismatched batch sizes.
        """
        if control is not None:
            raise ValueError("the learned prior takes no control input (it has no ControlNet and no camera "
                             "conditioning): leave model.controlnet empty and use it without avatar mode")
        batch = x_t.shape[0]
        if cond.shape[0] != batch:
            raise ValueError(f"cond batch {cond.shape[0]} != x_t batch {batch}")
        t = torch.as_tensor(t, device=self.device).long().reshape(-1).expand(batch)
        sample = x_t.detach().to(device=self.device, dtype=torch.float32)
        output = self.unet(sample, t, encoder_hidden_states=cond.to(self.device, torch.float32)).sample
        eps = noise_from_model_output(output, sample, self.alphas_cumprod[t], self.prediction_type)
        return eps.to(x_t.dtype)


def _check_config(config: ModelConfig) -> None:
    """Refuse model settings this prior cannot apply (rather than ignore them silently)."""
    given = [key for key, value in (("model.controlnet", config.controlnet), ("model.lora", config.lora),
                                    ("model.textual_inversion", config.textual_inversion),
                                    ("model.single_file_config", config.single_file_config)) if value]
    if given:
        raise PriorError(f"the learned prior does not support {', '.join(given)}: leave them empty")


def load_learned_prior(
    folder: str | Path, config: ModelConfig, device: torch.device | str | None = "cpu"
) -> LearnedPrior:
    """Load a ``train-prior`` folder (it holds ``lucid_prior.json``).

    Args:
        folder: the prior folder.
        config: only checked (ControlNet, LoRA, embeddings and single-file settings are refused); ``dtype`` is not
            read (float32 always).
        device: where the UNet runs (``"auto"``/None: CUDA if available).

    Raises:
        PriorError: a missing or damaged file, or an unsupported setting (one line naming it).
    """
    root = Path(folder).expanduser()
    meta = read_metadata(root)
    _check_config(config)
    target = resolve_device(device if device is not None else "auto")
    try:
        unet = UNet2DConditionModel.from_pretrained(root / UNET_DIR, use_safetensors=True)
        text_encoder = CLIPTextModel.from_pretrained(root / TEXT_ENCODER_DIR, use_safetensors=True)
        tokenizer = CLIPTokenizer.from_pretrained(root / TOKENIZER_DIR)
        scheduler = DDPMScheduler.from_pretrained(root / SCHEDULER_DIR)
    except _LOAD_ERRORS as err:
        logger.debug("loading the learned prior %s failed", root, exc_info=True)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PriorError(f"learned prior {folder}: a component could not be loaded ({reason}); train it again with "
                         "`train-prior`") from None
    if unet.config.sample_size != meta["resolution"]:
        raise PriorError(f"learned prior {folder}: the UNet's size {unet.config.sample_size} differs from the "
                         f"resolution {meta['resolution']} in its metadata")
    logger.info("learned prior %s: %d px, %d steps trained, captions %s", root, meta["resolution"],
                meta.get("steps", 0), meta.get("captions", []))
    return LearnedPrior(str(folder), unet, text_encoder, tokenizer, scheduler.alphas_cumprod, target,
                        captions=meta.get("captions"), prediction_type=prediction_type_of(scheduler.config))
