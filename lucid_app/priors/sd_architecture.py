"""Stable Diffusion 2.1 base's architecture with random weights, built from configs in code (no download).

``bench step`` measures the cost of a real-size step without the weights: time and memory of a step do not depend
on the weights' values, nor on the tokenizer's contents (only on its vocabulary size and context length), so a
random-weight model of the same shapes costs what the real one does. The configs are those of
``stabilityai/stable-diffusion-2-1-base`` (UNet 865.9M parameters with linear attention projections and
[5, 10, 20, 20] heads, 23-layer OpenCLIP-H text encoder of width 1024, the 83.7M-parameter KL VAE, the
scaled-linear 1000-step schedule, ε-prediction).

``mini`` is the same block layout at a fraction of the widths and depth, for tests and quick lever comparisons.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ArchName = Literal["sd21-base", "mini"]
# CLIP's byte-level BPE vocabulary size and context length (SD 2.x's OpenCLIP-H tokenizer has the same).
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
LATENT_CHANNELS = 4
VAE_SCALE_FACTOR = 8
SD_SCALING_FACTOR = 0.18215


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes of byte-level BPE (GPT-2/CLIP), in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def clip_sized_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer with CLIP's vocabulary size (49408) and context length (77), built in code.

    Every byte and byte + ``</w>`` are tokens (so any text tokenizes), filler tokens complete the vocabulary, there
    are no merges: texts tokenize character by character, which changes nothing in the cost of a step (the
    encoder always runs on 77 positions). transformers 5 takes ``vocab``/``merges`` directly.
    """
    symbols = byte_symbols()
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    filler = VOCAB_SIZE - 2 - len(vocab)
    for i in range(filler):
        vocab[f"<filler{i}>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CONTEXT_LENGTH)


def _text_encoder(tokenizer: CLIPTokenizer, arch: ArchName) -> CLIPTextModel:
    full = arch == "sd21-base"
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=1024 if full else 64,
        intermediate_size=4096 if full else 128,
        num_hidden_layers=23 if full else 2,
        num_attention_heads=16 if full else 4,
        max_position_embeddings=CONTEXT_LENGTH,
        hidden_act="gelu",
        projection_dim=512 if full else 32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


def _unet(arch: ArchName, latent_size: int, cross_attention_dim: int) -> UNet2DConditionModel:
    full = arch == "sd21-base"
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(320, 640, 1280, 1280) if full else (32, 64, 128, 128),
        layers_per_block=2 if full else 1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=cross_attention_dim,
        # SD 2.x's config names the head counts "attention_head_dim" (a diffusers legacy name).
        attention_head_dim=(5, 10, 20, 20) if full else 4,
        use_linear_projection=True,
        norm_num_groups=32,
    ).eval()


def _vae(arch: ArchName, size_px: int) -> AutoencoderKL:
    full = arch == "sd21-base"
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512) if full else (32, 64, 128, 128),
        layers_per_block=2 if full else 1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=32,
        sample_size=size_px,
        scaling_factor=SD_SCALING_FACTOR,
    ).eval()


def sd21_scheduler() -> DDIMScheduler:
    """SD 2.1 base's schedule: 1000 steps, scaled-linear β from 0.00085 to 0.012, ε-prediction."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def build_pipeline(arch: ArchName, size_px: int, dtype: torch.dtype, seed: int = 0,
                   pipeline_class: Callable[..., object] | None = None) -> object:
    """UNet, VAE, text encoder, tokenizer and scheduler of ``arch`` with random weights, in a diffusers pipeline.

    Args:
        arch: "sd21-base" (full size) or "mini".
        size_px: render resolution the prior works at (a multiple of 8; 512 for the paper); the UNet's
            ``sample_size`` is size_px / 8.
        dtype: weights' dtype.
        seed: the weights' seed (drawn under ``torch.random.fork_rng``, so the global generator is unchanged).
        pipeline_class: the pipeline class (default: diffusers' ``StableDiffusionPipeline``).

    Returns:
        The pipeline (no safety checker, no feature extractor).

    Raises:
        ValueError: an unknown arch or a size that is not a positive multiple of 8.
    """
    if arch not in ("sd21-base", "mini"):
        raise ValueError(f"unknown arch {arch!r}: expected sd21-base or mini")
    if size_px < VAE_SCALE_FACTOR or size_px % VAE_SCALE_FACTOR:
        raise ValueError(f"size must be a positive multiple of {VAE_SCALE_FACTOR}, got {size_px}")
    if pipeline_class is None:
        from lucid_app.priors.sd_loading import pipeline_class as sd_pipeline_class

        pipeline_class = sd_pipeline_class()
    tokenizer = clip_sized_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = _text_encoder(tokenizer, arch)
        unet = _unet(arch, size_px // VAE_SCALE_FACTOR, text_encoder.config.hidden_size)
        vae = _vae(arch, size_px)
    if dtype != torch.float32:
        text_encoder, unet, vae = (model.to(dtype) for model in (text_encoder, unet, vae))
    return pipeline_class(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sd21_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def parameter_counts(pipe: object) -> dict[str, int]:
    """Parameters of the UNet, VAE and text encoder of a pipeline."""
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters())
            for name in ("unet", "vae", "text_encoder")}
