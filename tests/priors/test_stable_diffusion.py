"""Stable Diffusion prior on tiny random-weight models, loaded through the user path (a diffusers folder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lucid_app.config import DEFAULT_MODEL, ModelConfig
from lucid_app.config.devices import resolve_device, resolve_dtype
from lucid_app.priors.base import PriorError

if TYPE_CHECKING:  # annotations only: their modules load in the tests that use them
    from lucid_app.priors.stable_diffusion import StableDiffusionPrior


@pytest.fixture(scope="module")
def prior(tiny_sd_dir: Path) -> StableDiffusionPrior:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    return load_stable_diffusion(str(tiny_sd_dir), ModelConfig(), device="cpu")


def _latents(batch: int, seed: int = 0) -> torch.Tensor:
    from tests.tiny_sd import LATENT_SIZE

    return torch.randn(batch, 4, LATENT_SIZE, LATENT_SIZE, generator=torch.Generator().manual_seed(seed))


def _all_parameters(prior: StableDiffusionPrior) -> list[torch.nn.Parameter]:
    modules = [prior.unet, prior.vae, prior.text_encoder] + ([prior.controlnet] if prior.controlnet else [])
    return [p for m in modules for p in m.parameters()]


def test_loads_tiny_folder_with_config_values(prior: StableDiffusionPrior, tiny_sd_dir: Path) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0
    from tests.tiny_sd import LATENT_SIZE

    assert prior.name == str(tiny_sd_dir)
    assert prior.device == torch.device("cpu")
    assert prior.dtype == torch.float32  # dtype "auto" on CPU
    assert prior.vae_scale_factor == 4 and prior.latent_size == LATENT_SIZE and prior.resolution_px == 32
    assert prior.scaling_factor == pytest.approx(0.18215)
    assert all(not p.requires_grad for p in _all_parameters(prior))
    assert not prior.unet.training and not prior.vae.training and not prior.text_encoder.training
    assert all(isinstance(proc, AttnProcessor2_0) for proc in prior.unet.attn_processors.values())
    assert prior.vae.use_slicing


def test_alphas_cumprod_match_diffusers(prior: StableDiffusionPrior, tiny_sd_dir: Path) -> None:
    from diffusers import DDIMScheduler

    reference = DDIMScheduler.from_pretrained(tiny_sd_dir, subfolder="scheduler")
    assert prior.num_train_timesteps == 1000
    assert prior.alphas_cumprod.dtype == torch.float32 and prior.alphas_cumprod.shape == (1000,)
    torch.testing.assert_close(prior.alphas_cumprod, reference.alphas_cumprod.float())


def test_encode_images_is_differentiable_and_deterministic(prior: StableDiffusionPrior) -> None:
    from tests.tiny_sd import LATENT_SIZE

    rgb = torch.rand(2, 20, 24, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    latents = prior.encode_images(rgb)
    assert latents.shape == (2, 4, LATENT_SIZE, LATENT_SIZE)
    latents.square().sum().backward()
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert all(p.grad is None for p in _all_parameters(prior))
    torch.testing.assert_close(prior.encode_images(rgb.detach()), latents.detach(), rtol=0, atol=0)


def test_decode_returns_images_in_unit_range(prior: StableDiffusionPrior) -> None:
    images = prior.decode(_latents(3))
    assert images.shape == (3, 32, 32, 3) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and not images.requires_grad


def test_encode_prompts_shape_cache_and_offload(prior: StableDiffusionPrior) -> None:
    from tests.tiny_sd import HIDDEN_SIZE

    cond = prior.encode_prompts(["a cat", "", "a cat"])
    assert cond.shape == (3, 77, HIDDEN_SIZE) and cond.dtype == prior.dtype
    torch.testing.assert_close(cond[0], cond[2])
    assert not torch.allclose(cond[0], cond[1])
    assert next(prior.text_encoder.parameters()).device.type == "cpu"
    torch.testing.assert_close(prior.encode_prompts(["", "a dog"])[0], cond[1])


def test_predict_noise_shape_dtype_determinism(prior: StableDiffusionPrior) -> None:
    x_t = _latents(2).requires_grad_(True)
    cond = prior.encode_prompts(["a cat", ""])
    t = torch.tensor([20, 700])
    eps = prior.predict_noise(x_t, t, cond)
    assert eps.shape == x_t.shape and eps.dtype == x_t.dtype and not eps.requires_grad
    torch.testing.assert_close(prior.predict_noise(x_t, t, cond), eps, rtol=0, atol=0)
    assert prior.predict_noise(x_t.double(), t, cond).dtype == torch.float64


def test_per_sample_conditioning_matches_separate_calls(prior: StableDiffusionPrior) -> None:
    x_t = _latents(2, seed=3)
    cond = prior.encode_prompts(["a cat", "a dog, side view"])
    t = torch.tensor([100, 400])
    together = prior.predict_noise(x_t, t, cond)
    apart = torch.cat([prior.predict_noise(x_t[i : i + 1], t[i : i + 1], cond[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(together[0], prior.predict_noise(x_t[:1], t[:1], cond[1:])[0])


def test_predict_noise_rejects_mismatched_batch_and_control_without_controlnet(prior: StableDiffusionPrior) -> None:
    cond = prior.encode_prompts(["a cat"])
    with pytest.raises(ValueError, match="cond batch"):
        prior.predict_noise(_latents(2), torch.tensor([1, 2]), cond)
    with pytest.raises(ValueError, match="no ControlNet"):
        prior.predict_noise(_latents(1), torch.tensor([1]), cond, control=torch.rand(1, 32, 32, 3))


def test_missing_hub_id_gives_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PriorError) as info:
        load_stable_diffusion("nobody-here/no-such-model", ModelConfig(), device="cpu")
    message = str(info.value)
    assert "nobody-here/no-such-model" in message and DEFAULT_MODEL in message
    assert "HF_HUB_OFFLINE is set" in message and "local diffusers folder" in message and ".safetensors" in message
    assert info.value.__suppress_context__ and info.value.__cause__ is None


@pytest.mark.parametrize("name", ["does/not/exist", "missing.safetensors"])
def test_missing_local_path_gives_clear_message(name: str, tmp_path: Path) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    path = str(tmp_path / name)
    with pytest.raises(PriorError, match="no such model file or folder") as info:
        load_stable_diffusion(path, ModelConfig(), device="cpu")
    assert path in str(info.value) and DEFAULT_MODEL in str(info.value)


def test_folder_without_model_index_is_rejected(tmp_path: Path) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    with pytest.raises(PriorError, match="model_index.json"):
        load_stable_diffusion(str(tmp_path), ModelConfig(), device="cpu")


def test_message_says_when_offline_is_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import lucid_app.priors.sd_loading as sd_loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert "HF_HUB_OFFLINE is not set" in sd_loading.missing_model_message("x/y", "not found")


def test_single_file_checkpoint_loads_the_same_model(
    prior: StableDiffusionPrior, tiny_sd_dir: Path, tmp_path: Path
) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion
    from tests.tiny_sd import save_tiny_sd_single_file

    checkpoint = save_tiny_sd_single_file(tmp_path / "tiny.safetensors")
    single = load_stable_diffusion(str(checkpoint), ModelConfig(single_file_config=str(tiny_sd_dir)), device="cpu")
    x_t, t = _latents(2, seed=11), torch.tensor([5, 900])
    cond = prior.encode_prompts(["a cat", ""])
    torch.testing.assert_close(single.encode_prompts(["a cat", ""]), cond, rtol=0, atol=0)
    torch.testing.assert_close(single.predict_noise(x_t, t, cond), prior.predict_noise(x_t, t, cond), rtol=0, atol=0)
    rgb = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(single.encode_images(rgb), prior.encode_images(rgb), rtol=0, atol=0)


def test_single_file_without_configs_offline_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion
    from tests.tiny_sd import save_tiny_sd_single_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = save_tiny_sd_single_file(tmp_path / "tiny.safetensors")
    with pytest.raises(PriorError, match="single_file_config") as info:
        load_stable_diffusion(str(checkpoint), ModelConfig(), device="cpu")
    assert str(checkpoint) in str(info.value) and "HF_HUB_OFFLINE is set" in str(info.value)


def test_textual_inversion_adds_token_and_uses_its_vector(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion
    from tests.tiny_sd import HIDDEN_SIZE

    vector = torch.randn(HIDDEN_SIZE, generator=torch.Generator().manual_seed(5))
    single = tmp_path / "cat_toy.safetensors"
    save_file({"<cat-toy>": vector}, str(single))
    # A1111 layout, two vectors: the token expands to "<dog-toy> <dog-toy>_1" inside prompts.
    multi = tmp_path / "dog_toy.bin"
    torch.save({"string_to_param": {"*": torch.randn(2, HIDDEN_SIZE)}, "name": "<dog-toy>"}, multi)
    # The A1111 file is a torch pickle: loaded only on the CLI's explicit opt-in (lucid_app.config.trust).
    prior = load_stable_diffusion(
        str(tiny_sd_dir), ModelConfig(textual_inversion=(str(single), str(multi))), device="cpu", allow_pickle=True
    )
    token_id = prior.tokenizer.convert_tokens_to_ids("<cat-toy>")
    assert token_id != prior.tokenizer.unk_token_id
    assert {"<dog-toy>", "<dog-toy>_1"} <= set(prior.tokenizer.get_vocab())
    torch.testing.assert_close(prior.text_encoder.get_input_embeddings().weight[token_id], vector)
    cond = prior.encode_prompts(["a <cat-toy>", "a cat", "a <dog-toy>"])
    assert not torch.allclose(cond[0], cond[1])
    assert not torch.allclose(cond[2], cond[1])


def test_bad_textual_inversion_file_is_a_prior_error(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion
    from tests.tiny_sd import HIDDEN_SIZE

    bad = tmp_path / "two_tokens.safetensors"
    save_file({"<a>": torch.zeros(HIDDEN_SIZE), "<b>": torch.zeros(HIDDEN_SIZE)}, str(bad))
    with pytest.raises(PriorError, match="textual-inversion"):
        load_stable_diffusion(str(tiny_sd_dir), ModelConfig(textual_inversion=(str(bad),)), device="cpu")


def test_lora_changes_noise_and_scale_zero_is_identity(
    prior: StableDiffusionPrior, tiny_sd_dir: Path, tmp_path: Path
) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion
    from tests.tiny_sd import save_tiny_lora

    pytest.importorskip("peft")
    lora_file = save_tiny_lora(tmp_path / "lora") / "pytorch_lora_weights.safetensors"
    x_t, t = _latents(2, seed=7), torch.tensor([50, 600])
    cond = prior.encode_prompts(["a cat", ""])
    base = prior.predict_noise(x_t, t, cond)
    with_lora = load_stable_diffusion(str(tiny_sd_dir), ModelConfig(lora=str(lora_file)), device="cpu")
    off = load_stable_diffusion(str(tiny_sd_dir), ModelConfig(lora=str(lora_file.parent), lora_scale=0.0), device="cpu")
    assert (with_lora.predict_noise(x_t, t, cond) - base).abs().max() > 1e-3
    torch.testing.assert_close(off.predict_noise(x_t, t, cond), base)
    assert not any("lora" in name for name, _ in with_lora.unet.named_parameters())


def test_missing_lora_is_a_prior_error(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    pytest.importorskip("peft")
    with pytest.raises(PriorError, match="Could not load the LoRA"):
        load_stable_diffusion(str(tiny_sd_dir), ModelConfig(lora=str(tmp_path / "no_lora")), device="cpu")


def test_lora_without_peft_names_the_package(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lucid_app.priors.sd_loading as sd_loading

    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    monkeypatch.setattr(sd_loading, "_peft_available", lambda: False)
    with pytest.raises(PriorError, match=r"pip install peft=="):
        load_stable_diffusion(str(tiny_sd_dir), ModelConfig(lora=str(tmp_path)), device="cpu")


def test_controlnet_residuals_change_noise_and_scale_zero_is_no_control(
    tiny_sd_dir: Path, tiny_controlnet_dir: Path
) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    config = ModelConfig(controlnet=str(tiny_controlnet_dir), controlnet_scale=1.0)
    prior = load_stable_diffusion(str(tiny_sd_dir), config, device="cpu")
    x_t, t = _latents(2, seed=9), torch.tensor([30, 300])
    cond = prior.encode_prompts(["a cat", "a dog"])
    control = torch.rand(2, 48, 40, 3, generator=torch.Generator().manual_seed(2))
    plain = prior.predict_noise(x_t, t, cond)
    controlled = prior.predict_noise(x_t, t, cond, control=control)
    assert controlled.shape == plain.shape and (controlled - plain).abs().max() > 1e-3
    assert all(not p.requires_grad for p in prior.controlnet.parameters())
    prior.controlnet_scale = 0.0
    torch.testing.assert_close(prior.predict_noise(x_t, t, cond, control=control), plain)


def test_missing_controlnet_is_a_prior_error(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from lucid_app.priors.stable_diffusion import load_stable_diffusion

    with pytest.raises(PriorError, match="ControlNet"):
        load_stable_diffusion(str(tiny_sd_dir), ModelConfig(controlnet=str(tmp_path / "nope")), device="cpu")


def test_resolve_device_and_dtype() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="valid"):
        resolve_dtype("float8", torch.device("cpu"))
    with pytest.raises(ValueError, match="valid"):
        resolve_device("tpu")
