"""Tiny random-weight Stable Diffusion components for CPU tests (a helper module, not a test file).

Everything is built in code from small configs, with a seeded ``torch.manual_seed`` before each model so the
weights are the same in every run. ``save_tiny_sd`` writes a real diffusers folder (``model_index.json`` plus
one sub-folder per component), so tests load it through the same ``load_stable_diffusion`` path users take.

Sizes: the VAE has three blocks (scale factor 4), the UNet works on 8×8 latents (so renders are resized to
32×32 pixels) with cross-attention only at the lower resolution, which keeps a UNet call at a few ms on CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from lucid_app.priors.sd_architecture import byte_symbols, sd21_scheduler

HIDDEN_SIZE = 32
LATENT_SIZE = 8
VAE_SCALING_FACTOR = 0.18215
# Whole words of the test prompts that get their own token (everything else splits into characters).
# ControlNet modules diffusers initialises to zero (its "zero convolutions").
ZERO_INITIALISED_CONTROLNET = ("controlnet_down_blocks.", "controlnet_mid_block.",
                               "controlnet_cond_embedding.conv_out.")
WORDS = ("a", "cat", "dog", "toy", "front", "side", "back", "view", "photo", "of", "blurry")


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that build ``word</w>`` from its characters."""
    merges = []
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    current = pieces[0]
    for piece in pieces[1:]:
        merges.append((current, piece))
        current = current + piece
    return merges


def tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP BPE tokenizer built in code: every byte, every byte + ``</w>``, the test words.

    transformers 5 takes ``vocab``/``merges`` directly (the ``vocab_file=`` form is silently ignored).
    """
    symbols = byte_symbols()
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        for left, right in _word_merges(word):
            if (left, right) not in merges:
                merges.append((left, right))
                vocab.setdefault(left + right, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_text_encoder(tokenizer: CLIPTokenizer, seed: int = 0) -> CLIPTextModel:
    """A 2-layer CLIP text encoder with hidden size 32 matching ``tokenizer``'s vocabulary."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    """An SD-style UNet on [B, 4, 8, 8] latents, cross-attention only in the lower-resolution block."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=HIDDEN_SIZE,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A 3-block KL autoencoder: 4 latent channels, spatial scale factor 4, SD's scaling factor."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=LATENT_SIZE * 4,
        scaling_factor=VAE_SCALING_FACTOR,
    ).eval()


def tiny_scheduler() -> DDIMScheduler:
    """SD's training schedule: 1000 steps, scaled-linear betas from 0.00085 to 0.012 (the real SD 2.1 base one)."""
    return sd21_scheduler()


def tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """All tiny components in a ``StableDiffusionPipeline`` (no safety checker, no feature extractor)."""
    tokenizer = tiny_tokenizer()
    return StableDiffusionPipeline(
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        unet=tiny_unet(seed),
        scheduler=tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny model as a diffusers folder (model_index.json + sub-folders); returns the folder."""
    folder = Path(folder)
    tiny_pipeline(seed).save_pretrained(folder)
    return folder


def save_tiny_controlnet(folder: str | Path, seed: int = 1) -> Path:
    """Write a ControlNet for the tiny UNet (random weights, including the zero-initialised output convs).

    The conditioning embedding downsamples by the VAE scale factor (4) so control images at the pixel
    resolution line up with the latents. The zero convolutions are re-drawn at random: a fresh ControlNet has
    no effect at all, which would make "control changes ε" untestable.
    """
    folder = Path(folder)
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(tiny_unet(seed), conditioning_embedding_out_channels=(8, 16, 16))
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if name.startswith(ZERO_INITIALISED_CONTROLNET):
                param.normal_(0.0, 0.1)
    controlnet.save_pretrained(folder)
    return folder


def save_tiny_lora(folder: str | Path, seed: int = 2, rank: int = 4) -> Path:
    """Write a random LoRA for the tiny UNet's attention projections in diffusers' format (needs peft).

    ``init_lora_weights=False`` draws both low-rank factors at random, so the LoRA changes the UNet's output
    (the default initialisation has B = 0, a no-op).
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = tiny_unet()
    unet.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
        )
    )
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet))
    return folder


# --- single-file (original LDM layout) checkpoints --------------------------------------------------------------
# The original Stable Diffusion repositories store one state dict with prefixes per component and their own
# module names. The renames below are written from that layout for the blocks the tiny models use
# (DownBlock2D/CrossAttn*, DownEncoderBlock2D/UpDecoderBlock2D), so a single-file load can be tested.

_LDM_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_LDM_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                 "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_LDM_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _ldm_resnet(inner: list[str]) -> str:
    return ".".join([_LDM_RESNET.get(inner[0], inner[0]), *inner[1:]])


def _ldm_unet_key(key: str, unet: UNet2DConditionModel) -> str:
    """diffusers UNet key -> original key. Levels hold ``layers_per_block`` (+1 going up) resnet[+attention]
    units numbered consecutively, with the down/upsampler as the last unit (down) or last module (up)."""
    for name, ldm in _LDM_UNET_TOP.items():
        if key.startswith(name + "."):
            return ldm + key[len(name) :]
    parts = key.split(".")
    per_level = unet.config.layers_per_block + 1
    if parts[0] == "mid_block":
        kind, j, inner = parts[1], int(parts[2]), parts[3:]
        if kind == "attentions":
            return "middle_block.1." + ".".join(inner)
        return f"middle_block.{2 * j}." + _ldm_resnet(inner)
    level, kind, j, inner = int(parts[1]), parts[2], int(parts[3]), parts[4:]
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return f"input_blocks.{per_level * (level + 1)}.0.op." + ".".join(inner[1:])
        unit = f"input_blocks.{per_level * level + j + 1}"
    else:
        if kind == "upsamplers":
            has_attention = hasattr(unet.up_blocks[level], "attentions")
            return f"output_blocks.{per_level * (level + 1) - 1}.{2 if has_attention else 1}." + ".".join(inner)
        unit = f"output_blocks.{per_level * level + j}"
    if kind == "attentions":
        return f"{unit}.1." + ".".join(inner)
    return f"{unit}.0." + _ldm_resnet(inner)


def _ldm_vae_key(key: str, tensor: torch.Tensor, num_blocks: int) -> tuple[str, torch.Tensor]:
    parts = key.split(".")
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return key, tensor
    coder, rest = parts[0], parts[1:]
    if rest[0] == "conv_norm_out":
        return f"{coder}.norm_out.{rest[1]}", tensor
    if rest[0] in ("conv_in", "conv_out"):
        return key, tensor
    if rest[0] == "mid_block":
        if rest[1] == "attentions":
            inner = ".".join(rest[3:-1])
            if inner != "group_norm":
                tensor = tensor.reshape(*tensor.shape, 1, 1) if tensor.ndim == 2 else tensor
            return f"{coder}.mid.attn_1.{_LDM_VAE_ATTENTION[inner]}.{rest[-1]}", tensor
        sub = "nin_shortcut" if rest[3] == "conv_shortcut" else rest[3]
        return f"{coder}.mid.block_{int(rest[2]) + 1}.{sub}.{rest[-1]}", tensor
    i = int(rest[1])
    level = f"{coder}.down.{i}" if coder == "encoder" else f"{coder}.up.{num_blocks - 1 - i}"
    if rest[2] in ("downsamplers", "upsamplers"):
        sample = "downsample" if rest[2] == "downsamplers" else "upsample"
        return f"{level}.{sample}.conv.{rest[-1]}", tensor
    sub = "nin_shortcut" if rest[4] == "conv_shortcut" else rest[4]
    return f"{level}.block.{rest[3]}.{sub}.{rest[-1]}", tensor


def save_tiny_sd_single_file(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny model (same weights as ``save_tiny_sd(seed=seed)``) as one original-layout .safetensors.

    Loading it needs the component configs: pass a ``save_tiny_sd`` folder as ``single_file_config``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    pipe = tiny_pipeline(seed)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in pipe.unet.state_dict().items():
        state["model.diffusion_model." + _ldm_unet_key(key, pipe.unet)] = tensor
    num_blocks = len(pipe.vae.config.block_out_channels)
    for key, tensor in pipe.vae.state_dict().items():
        ldm_key, ldm_tensor = _ldm_vae_key(key, tensor, num_blocks)
        state["first_stage_model." + ldm_key] = ldm_tensor
    for key, tensor in pipe.text_encoder.state_dict().items():
        # The original layout keeps the "text_model." level that transformers >= 5.6 flattened away.
        state["cond_stage_model.transformer.text_model." + key.removeprefix("text_model.")] = tensor
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
