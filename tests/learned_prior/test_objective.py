"""The learned prior's objective (``learned_prior.objective``): targets, min-SNR-γ weights, and a prior trained to
predict v or x₀ that still hands guidance ε̂; old ε-prediction folders keep loading and resuming."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from lucid_app.cli.main import main as cli_main
from lucid_app.config import ModelConfig
from lucid_app.guidance.ddim import add_noise, predict_x0
from lucid_app.priors.prediction import noise_from_model_output
from lucid_app.priors.learned_folder import METADATA_NAME, read_metadata
from lucid_app.learned_prior.model import build_scheduler
from lucid_app.learned_prior.objective import (
    PREDICTIONS,
    diffusion_loss,
    loss_weight,
    training_target,
)
from lucid_app.learned_prior.session import run_training
from lucid_app.learned_prior.train import TrainSettings
from lucid_app.priors import load_prior
from tests.helpers import TRAIN_SIZE as SIZE, write_bar_object

T = torch.tensor([0, 10, 150, 300, 450, 999])


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand((len(T), 3, 4, 4), generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    return x0, noise, build_scheduler("epsilon").alphas_cumprod[T]


def test_the_parser_offers_every_prediction() -> None:
    from lucid_app.cli.train_prior import PREDICTIONS as PARSER_PREDICTIONS

    assert PARSER_PREDICTIONS == PREDICTIONS


def test_targets_are_diffusers_epsilon_velocity_and_sample() -> None:
    x0, noise, alpha = _batch()
    scheduler = DDPMScheduler(**build_scheduler("v_prediction").config)
    torch.testing.assert_close(training_target(x0, noise, alpha, "v_prediction"), scheduler.get_velocity(x0, noise, T))
    assert torch.equal(training_target(x0, noise, alpha, "epsilon"), noise)
    assert torch.equal(training_target(x0, noise, alpha, "sample"), x0)
    with pytest.raises(ValueError, match="epsilon, v_prediction, sample"):
        training_target(x0, noise, alpha, "flow")  # type: ignore[arg-type]


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("gamma", [0.0, 5.0])
def test_every_weighted_loss_is_an_x0_space_loss_with_weight_min_snr_gamma(prediction: str, gamma: float) -> None:
    """w·‖f − target‖² = W(t)·‖x̂₀ − x₀‖² per sample, with W = min(SNR, γ) (or the parametrisation's own factor SNR,
    SNR + 1 or 1 without weighting), x̂₀ recovered from the output as guidance does."""
    x0, noise, alpha = _batch()
    x_t = add_noise(x0, noise, alpha)
    output = training_target(x0, noise, alpha, prediction) + 0.1 * torch.randn(x0.shape, generator=torch.Generator())
    per_sample = (output - training_target(x0, noise, alpha, prediction)).square().flatten(1).mean(1)
    x0_hat = predict_x0(x_t, noise_from_model_output(output, x_t, alpha, prediction), alpha)
    x0_error = (x0_hat - x0).square().flatten(1).mean(1)
    snr = alpha / (1 - alpha)
    own = {"epsilon": snr, "v_prediction": snr + 1, "sample": torch.ones_like(snr)}[prediction]
    expected = snr.clamp(max=gamma) if gamma else own
    torch.testing.assert_close(loss_weight(alpha, prediction, gamma) * per_sample, expected * x0_error, rtol=2e-3,
                               atol=1e-6)


def test_unweighted_loss_is_exactly_the_mean_squared_error() -> None:
    """γ = 0 keeps ``F.mse_loss`` bit for bit, so ε-priors trained before these options resume identically."""
    x0, noise, alpha = _batch()
    output = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(diffusion_loss(output, x0, noise, alpha, "epsilon", 0.0), F.mse_loss(output, noise))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("objective_dataset")
    write_bar_object(root / "car", "a red toy car", (220, 20, 20))
    return root


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_a_prior_trained_for_v_or_x0_hands_guidance_epsilon(dataset: Path, tmp_path: Path, prediction: str) -> None:
    out = tmp_path / "prior"
    settings = TrainSettings(dataset=str(dataset), out=str(out), size=SIZE, steps=2, minutes=None, batch_size=2,
                             warmup_steps=1, sample_steps=0, prediction=prediction, snr_gamma=5.0)
    run_training(settings, False, [], None, "test", threading.Event())
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == prediction
    assert read_metadata(out)["settings"]["prediction"] == prediction
    prior = load_prior(str(out), ModelConfig(), "cpu")
    assert prior.prediction_type == prediction
    x_t = torch.randn((2, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([50, 600])
    cond = prior.encode_prompts(["a red toy car", ""])
    raw = prior.unet(x_t, t, encoder_hidden_states=cond).sample
    expected = noise_from_model_output(raw, x_t, prior.alphas_cumprod[t], prediction)
    torch.testing.assert_close(prior.predict_noise(x_t, t, cond), expected)


def test_cli_records_the_objective_and_old_folders_resume_as_epsilon(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    write_bar_object(tmp_path / "car", "a red toy car", (220, 20, 20), size=32)
    out = tmp_path / "prior"
    base = ["train-prior", "--dataset", str(tmp_path / "car"), "--out", str(out), "--batch-size", "2",
            "--sample-steps", "0"]
    assert cli_main([*base, "--steps", "1", "--prediction", "epsilon"]) == 0
    meta = read_metadata(out)
    assert meta["settings"]["prediction"] == "epsilon" and "--prediction epsilon --snr-gamma 0" in meta["commands"][0]
    assert cli_main([*base, "--steps", "2", "--resume", "--prediction", "sample"]) == 2
    assert "--prediction sample differs" in capsys.readouterr().err
    # A folder written before the objective was a setting: no prediction / snr_gamma in its settings.
    for key in ("prediction", "snr_gamma"):
        del meta["settings"][key]
    (out / METADATA_NAME).write_text(json.dumps(meta))
    assert cli_main(["train-prior", "--out", str(out), "--steps", "2", "--resume"]) == 0
    resumed = read_metadata(out)
    assert resumed["steps"] == 2 and resumed["settings"]["prediction"] == "epsilon"
    assert load_prior(str(out), ModelConfig(), "cpu").prediction_type == "epsilon"
