"""The learned prior's networks and schedule, built from configs in code (DESIGN §5b).

Pixel space, no autoencoder: x₀ = image·2 − 1, [C, 3, R, R]. On a CPU the 3×32×32 space is cheap, there is no
autoencoder to train, and no reconstruction error confounds the quality benchmark.

- UNet: diffusers ``UNet2DConditionModel`` with one layer per block and cross-attention only at the two lower
  resolutions (R/2 and R/4): 1.69M parameters at R = 32, about 0.7 s per forward + backward of a batch of 32 on
  two CPU cores. R > 32 (``--size 64``) gets one more plain ``DownBlock2D`` level in front, so cross-attention
  stays at 16×16 and 8×8 tokens and a step costs only the extra convolutions at 64×64.
- Text encoder: a CLIP text transformer of width 64 (2 layers, 2 heads, 77 positions), trained jointly.
- Schedule: Stable Diffusion's (scaled-linear β from 0.00085 to 0.012 over 1000 steps); the scheduler config records
  what the UNet predicts (``prediction_type``: ε, v or x₀, :mod:`lucid_app.learned_prior.objective`).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from lucid_app.priors.multiview import SD_SCHEDULE
from lucid_app.priors.sd_architecture import CONTEXT_LENGTH

IMAGE_CHANNELS = 3
TEXT_WIDTH = 64
TEXT_LAYERS = 2
TEXT_HEADS = 2
TEXT_MLP = 4 * TEXT_WIDTH
# The attention resolutions are R/2 and R/4 up to this size; above it a plain level is added in front.
BASE_RESOLUTION = 32
SUPPORTED_SIZES = (32, 64)


def build_unet(resolution: int) -> UNet2DConditionModel:
    """The denoiser for [B, 3, R, R] pixels, cross-attending to [B, 77, TEXT_WIDTH] text states (random weights).

    Raises:
        ValueError: R not a multiple of 8, or below 16 (the lowest level works at R/4 or R/8).
    """
    if resolution < 16 or resolution % 8:
        raise ValueError(f"learned prior: the resolution must be a multiple of 8 and >= 16, got {resolution}")
    extra = resolution > BASE_RESOLUTION
    return UNet2DConditionModel(
        sample_size=resolution,
        in_channels=IMAGE_CHANNELS,
        out_channels=IMAGE_CHANNELS,
        layers_per_block=1,
        block_out_channels=(32,) * extra + (32, 64, 64),
        down_block_types=("DownBlock2D",) * extra + ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D") + ("UpBlock2D",) * extra,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A CLIP text transformer over ``tokenizer``'s vocabulary (random weights, no dropout)."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=TEXT_MLP,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        max_position_embeddings=CONTEXT_LENGTH,
        projection_dim=TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_models(tokenizer: CLIPTokenizer, resolution: int, seed: int) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """UNet and text encoder with initial weights drawn from ``seed`` (under ``fork_rng``: the global generator
    is left as it was; module initialisers take no generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(resolution)
        text_encoder = build_text_encoder(tokenizer)
    return unet, text_encoder


def build_scheduler(prediction: str) -> DDPMScheduler:
    """Stable Diffusion's training schedule (1000 steps, scaled-linear β) for a UNet that predicts ``prediction``
    (diffusers' ``prediction_type``: "epsilon", "v_prediction" or "sample")."""
    return DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction, clip_sample=False)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
