"""The prior doctor (``lucid_app.lab``): its identities, its closed form on a linear-Gaussian prior, and the CLI.

The linear-Gaussian prior below is x₀ ~ N(μ, diag σ²) with its exact posterior-mean denoiser: every map the
guidances apply is affine in x₀ there, so the gains are per-dimension products of DDIM-jump derivatives, computed
here independently of the guidance code.
"""

from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path

import pytest
import torch

from lucid_app.cli.main import main as cli_main
from lucid_app.config import GuidanceConfig, PromptConfig
from lucid_app.guidance import GUIDANCES
from lucid_app.guidance.ddim import inversion_schedule
from lucid_app.guidance.prompts import encode_prompt_set
from lucid_app.guidance.sdi import sdi_indices
from lucid_app.lab.doctor.measure import (
    METHOD_PREVIEWS,
    DoctorSettings,
    measure,
    perturbation,
    pull_without_noise,
)
from lucid_app.lab.doctor.defaults import METHODS
from lucid_app.lab.doctor.references import spread_indices
from lucid_app.priors.multiview import sd_alphas_cumprod
from tests.helpers import write_object

SIZE = 8
CHANNELS = 3


class LinearGaussianPrior:
    """x₀ ~ N(μ, diag σ²) in float64, with the exact denoiser ε̂(x, t) = (x − √ᾱ_t·m_t(x))/√(1−ᾱ_t),
    m_t(x) = μ + c_t·(x − √ᾱ_t·μ), c_t = √ᾱ_t·σ²/(ᾱ_t·σ² + 1 − ᾱ_t). Prompts are ignored (every conditioning
    row is zero), so CFG returns the exact ε̂ at any scale."""

    name = "linear-gaussian"
    device = torch.device("cpu")

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        self.mu, self.var = mu.double(), sigma.double().square()
        self.alphas_cumprod = sd_alphas_cumprod().double()
        self.num_train_timesteps = int(self.alphas_cumprod.shape[0])

    def c(self, t: int) -> torch.Tensor:
        a = self.alphas_cumprod[t]
        return a.sqrt() * self.var / (a * self.var + 1 - a)

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb.permute(0, 3, 1, 2).double() * 2 - 1

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        return torch.zeros(len(texts), 1, dtype=torch.float64)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                      control: torch.Tensor | None = None) -> torch.Tensor:
        a = self.alphas_cumprod[t.long()].reshape(-1, 1, 1, 1)
        c = a.sqrt() * self.var / (a * self.var + 1 - a)
        mean = self.mu + c * (x_t - a.sqrt() * self.mu)
        return (x_t - a.sqrt() * mean) / (1 - a).sqrt()


@pytest.fixture(scope="module")
def gaussian() -> LinearGaussianPrior:
    gen = torch.Generator().manual_seed(3)
    mu = torch.rand((CHANNELS, SIZE, SIZE), generator=gen) - 0.5
    sigma = 0.05 + 0.9 * torch.rand((CHANNELS, SIZE, SIZE), generator=gen)
    return LinearGaussianPrior(mu, sigma)


def _x0(prior: LinearGaussianPrior, views: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return prior.mu + prior.var.sqrt() * torch.randn((views, CHANNELS, SIZE, SIZE), generator=gen, dtype=torch.float64)


def jump_derivative(prior: LinearGaussianPrior, a: int, b: int) -> torch.Tensor:
    """∂x_b/∂x_a of one DDIM jump a → b with the exact ε̂: x_b = √ᾱ_b·m_a(x) + √(1−ᾱ_b)·ε̂(x, a)."""
    alpha_a, alpha_b = prior.alphas_cumprod[a], prior.alphas_cumprod[b]
    c_a = prior.c(a)
    return alpha_b.sqrt() * c_a + (1 - alpha_b).sqrt() * (1 - alpha_a.sqrt() * c_a) / (1 - alpha_a).sqrt()


def path_derivative(prior: LinearGaussianPrior, indices: list[int], start: torch.Tensor) -> torch.Tensor:
    """∂x/∂x₀ at the end of a DDIM inversion along ``indices``, starting from ∂x_{indices[0]}/∂x₀ = ``start``."""
    derivative = start
    for a, b in zip(indices[:-1], indices[1:]):
        derivative = derivative * jump_derivative(prior, a, b)
    return derivative


def closed_form_gains(
    prior: LinearGaussianPrior, method: str, t: int, config: GuidanceConfig
) -> dict[str, torch.Tensor]:
    """Per-dimension gains [3, R, R] along each method's path (independent of the guidance code)."""
    alphas = prior.alphas_cumprod
    if method == "sds":
        return {"t": prior.c(t) * alphas[t].sqrt()}
    if method == "sdi":
        indices = sdi_indices(t, config.sdi_inversion_steps, prior.num_train_timesteps)
        return {"t": prior.c(t) * path_derivative(prior, indices, torch.ones_like(prior.var))}
    s = max(t - config.delta_t, 0)
    indices = inversion_schedule(s, config.xs_delta_t, config.xs_inv_steps)
    d_s = path_derivative(prior, indices, alphas[indices[0]].sqrt() * torch.ones_like(prior.var))
    return {"s": prior.c(s) * d_s, "t": prior.c(t) * d_s * jump_derivative(prior, s, t)}


def test_every_doctor_method_has_its_previews() -> None:
    assert tuple(METHOD_PREVIEWS) == METHODS


def test_perturbations_have_the_amplitude_per_view_and_the_low_one_is_smooth() -> None:
    like = torch.zeros((3, 4, 32, 32))
    white = perturbation("white", like, 0.1, torch.Generator().manual_seed(0))
    low = perturbation("lowfreq", like, 0.1, torch.Generator().manual_seed(0))
    for d in (white, low):
        torch.testing.assert_close(d.square().flatten(1).mean(1).sqrt(), torch.full((3,), 0.1))
    roughness = [float((d[..., 1:] - d[..., :-1]).square().mean() / d.square().mean()) for d in (white, low)]
    assert roughness[1] < 0.1 * roughness[0]
    assert torch.equal(white, perturbation("white", like, 0.1, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="valid: white, lowfreq"):
        perturbation("pink", like, 0.1, torch.Generator())  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["ism", "sds", "sdi"])
def test_gradient_identities_hold_to_float_precision(gaussian: LinearGaussianPrior, method: str) -> None:
    """ISM: grad = λ(x̂₀(x_s) − x̂₀ᶜᶠᵍ(x_t)); SDS and SDI: grad = λ(x₀ − x̂₀ᶜᶠᵍ(x_t))."""
    config = GuidanceConfig(lambda_guidance=0.3)
    x0 = _x0(gaussian, 3)
    prompts = encode_prompt_set(gaussian, PromptConfig(text="anything", negative=""))
    out = GUIDANCES[method](gaussian, x0, torch.zeros(3), prompts, 1, config, torch.Generator().manual_seed(0),
                            delta_t=config.delta_t, return_previews=True, t=400)
    start = out.previews["target_x0"] if method == "ism" else x0
    torch.testing.assert_close(out.grad, 0.3 * (start - out.previews["pred_x0"]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("t", [100, 300, 450, 700])
def test_restoring_and_gains_match_the_linear_gaussian_closed_form(gaussian: LinearGaussianPrior, t: int) -> None:
    config = GuidanceConfig()
    x0 = _x0(gaussian)
    prompts = encode_prompt_set(gaussian, PromptConfig(text="anything", negative=""))
    settings = DoctorSettings(timesteps=(t,), seeds=2)
    result = measure(gaussian, x0, torch.zeros(2), prompts, config, settings)
    gen = torch.Generator().manual_seed(settings.perturbation_seed)
    for kind in settings.perturbations:
        d = perturbation(kind, x0, settings.amplitude, gen)
        weights = d.square() / d.square().sum()
        for method in settings.methods:
            expected = {w: float((weights * g).sum())
                        for w, g in closed_form_gains(gaussian, method, t, config).items()}
            for which, value in expected.items():
                measured = result.gain[kind][method][which][t]
                assert measured == pytest.approx([value] * 2, abs=1e-9), (kind, method, which)
            r_expected = expected["s"] - expected["t"] if method == "ism" else 1.0 - expected["t"]
            assert result.restoring[kind][method][t] == pytest.approx([r_expected] * 2, abs=1e-9), (kind, method)
    assert result.nonfinite == 0
    # The exact posterior mean is contractive: its gain falls with t, so ISM restores.
    assert result.verdict("ism") == "restores" and result.verdict("sds") == "restores"


@pytest.mark.parametrize("method", ["ism", "sds"])
def test_the_pull_and_the_fixed_point_match_the_linear_gaussian_closed_form(gaussian: LinearGaussianPrior,
                                                                            method: str) -> None:
    """On the linear-Gaussian prior every path is affine in x₀ − μ with no offset (x₀ = μ stays put), so
    E[g(x₀)]/λ = r_dim·(x₀ − μ) per dimension, r_dim the closed-form gain difference: the pull is its RMS, measured
    over 16 seeds × 2 perturbation blocks of the paths' noise (SDS's x_t, ISM's first noised step)."""
    t = 300
    config = GuidanceConfig(offset_noise=0.0)
    x0 = _x0(gaussian)
    prompts = encode_prompt_set(gaussian, PromptConfig(text="anything", negative=""))
    settings = DoctorSettings(timesteps=(t,), methods=(method,), seeds=16)
    result = measure(gaussian, x0, torch.zeros(2), prompts, config, settings)
    gains = closed_form_gains(gaussian, method, t, config)
    r_dim = gains["s"] - gains["t"] if method == "ism" else 1.0 - gains["t"]
    expected = float((r_dim * (x0 - gaussian.mu)).square().mean().sqrt())
    assert result.pull[method][t] == pytest.approx(expected, rel=0.03)
    assert result.offset(method, t) == pytest.approx(result.pull[method][t] / result.mean_restoring(method, t))


def test_the_pull_estimate_removes_the_noise_of_the_mean() -> None:
    """n samples of a constant b plus unit noise: the plain RMS of the mean is inflated by the noise (≈ √(b² + 1/n)),
    the estimate is not; one sample is its own RMS; pure noise gives ≈ 0."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn((8, 20000), generator=gen, dtype=torch.float64)
    assert pull_without_noise(0.5 + noise) == pytest.approx(0.5, abs=0.02)
    assert float((0.5 + noise).mean(0).square().mean().sqrt()) > 0.6
    assert pull_without_noise(noise) < 0.05 and float(noise.mean(0).square().mean().sqrt()) > 0.3
    assert pull_without_noise(torch.full((1, 5), -2.0)) == 2.0


def test_settings_are_checked_before_any_call(gaussian: LinearGaussianPrior) -> None:
    for bad, match in ((DoctorSettings(methods=("naive",)), "valid: ism, sds, sdi"),
                       (DoctorSettings(timesteps=(0,)), r"\[1, 1000\)"), (DoctorSettings(timesteps=(1000,)), "1000"),
                       (DoctorSettings(seeds=0), "seeds")):
        with pytest.raises(ValueError, match=match):
            bad.check(gaussian.num_train_timesteps)


def test_spread_indices_are_even_and_capped() -> None:
    assert spread_indices(20, 4) == [0, 5, 10, 15]
    assert spread_indices(3, 4) == [0, 1, 2]


# --- the command on the three kinds of prior ------------------------------------------------------------------------

CAPTIONS = (("car", "a red toy car"), ("cat", "a cat"))
VIEWS = [(az, 80.0) for az in (0.0, 60.0, 120.0, 180.0, -120.0, -60.0)]
TEST_VIEWS = [(30.0, 80.0), (-150.0, 80.0)]
FAST = ["--t", "300", "--seeds", "1", "--views", "2", "--methods", "ism,sds"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("doctor_dataset")
    for k, (name, caption) in enumerate(CAPTIONS):
        write_object(root / name, caption, VIEWS, seed=k, size=16, test_views=TEST_VIEWS)
    return root


@pytest.fixture(scope="module")
def learned(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lucid_app.learned_prior.session import run_training
    from lucid_app.learned_prior.train import TrainSettings

    out = tmp_path_factory.mktemp("doctor_prior") / "prior"
    settings = TrainSettings(dataset=str(dataset), out=str(out), size=16, steps=3, minutes=None, batch_size=4,
                             warmup_steps=1, sample_steps=0, prediction="v_prediction")
    run_training(settings, False, [], None, "test", threading.Event())
    return out


def run_doctor(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict | None, str]:
    code = cli_main(["doctor", *args])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, (json.loads(lines[-1]) if code == 0 else None), captured.err


def check_shape(result: dict, methods: list[str], ts: list[int]) -> None:
    assert result["t"] == ts and result["methods"] == methods
    for method in methods:
        assert set(result["restoring"][method]) == {str(t) for t in ts}
        assert set(result["gain"][method]) == set(METHOD_PREVIEWS[method])
        assert result["verdict"][method] in ("restores", "drifts")
        for r in result["restoring"][method].values():
            assert math.isfinite(r)
    for kind in ("white", "lowfreq"):
        assert set(result["by_perturbation"][kind]["restoring"]) == set(methods)
    if "ism" in methods:
        for t in map(str, ts):  # r_ISM = gain_s − gain_t with common seeds (float32 priors)
            gains = result["gain"]["ism"]
            assert result["restoring"]["ism"][t] == pytest.approx(gains["s"][t] - gains["t"][t], abs=2e-3)
    if "sds" in methods:
        for t in map(str, ts):
            assert result["restoring"]["sds"][t] == pytest.approx(1 - result["gain"]["sds"]["t"][t], abs=2e-3)


def test_doctor_on_a_learned_prior_with_a_dataset_writes_json_and_plot(learned: Path, dataset: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "doctor"
    code, result, err = run_doctor(["--model", str(learned), "--prompt", "a red toy car", "--dataset", str(dataset),
                                    "--t", "300,450", "--seeds", "1", "--views", "2", "--out", str(out)], capsys)
    assert code == 0, err
    check_shape(result, ["ism", "sds", "sdi"], [300, 450])
    assert result["preset"] == "learned_demo" and result["references"]["source"] == "dataset"
    assert result["references"]["caption"] == "a red toy car" and result["references"]["indices"] == [0, 1]
    assert "verdict ism:" in err and "gain_s" in err
    saved = json.loads((out / "doctor.json").read_text())
    assert saved["restoring"] == result["restoring"]
    svg = (out / "doctor.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 3 + 4  # r per method; ISM's two gains + SDS + SDI


def test_doctor_on_the_multiview_prior(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, err = run_doctor(["--model", f"multiview:{dataset}", "--prompt", "a cat", "--dataset", str(dataset),
                                    *FAST], capsys)
    assert code == 0, err
    check_shape(result, ["ism", "sds"], [300])
    assert result["preset"] == "demo"


def test_doctor_on_tiny_stable_diffusion_uses_its_own_samples(tiny_sd_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, result, err = run_doctor(["--model", str(tiny_sd_dir), "--prompt", "a cat", *FAST, "--methods", "ism,sds,sdi",
                                    "--set", "render.width=32", "--set", "render.height=32"], capsys)
    assert code == 0, err
    check_shape(result, ["ism", "sds", "sdi"], [300])
    assert result["preset"] == "paper" and result["references"]["source"] == "samples"
    assert result["references"]["azimuth_deg"] == [0.0, 0.0]


@pytest.mark.parametrize("args, message", [
    (["--t", "0"], "timesteps must be >= 1"),
    (["--t", "1000"], r"\[1, 1000\)"),
    (["--prompt", " "], "prompt is empty"),
    (["--prompt", "a green bicycle", "--dataset", "DATASET"], "a red toy car"),
    (["--model", "no/such/folder/here"], "Could not load the diffusion model"),
])
def test_bad_input_is_one_line_and_exit_2(learned: Path, dataset: Path, args: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = {"--model": str(learned), "--prompt": "a red toy car"}
    pairs = dict(zip(args[::2], args[1::2]))
    merged = {**base, **{k: (str(dataset) if v == "DATASET" else v) for k, v in pairs.items()}}
    code, _, err = run_doctor([x for kv in merged.items() for x in kv] + FAST[2:], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), err


def test_unknown_method_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["doctor", "--model", "m", "--prompt", "p", "--methods", "ism,naive"])
    assert exit_info.value.code == 2
    assert "valid: ism, sds, sdi" in capsys.readouterr().err
