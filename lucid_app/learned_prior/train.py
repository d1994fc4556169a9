"""Training the learned prior on a dataset's train views (DESIGN §5b).

One step (DDPM's simple loss, Ho et al. 2020 eq. 14, in the parametrisation ``prediction`` with optional min-SNR-γ
weighting: :mod:`lucid_app.learned_prior.objective`):
1. draw B image indices and their captions (``data.draw_batch``: 10% empty, else 20% plain, else view caption);
2. draw t ~ U{0, ..., T−1} and ε ~ N(0, I); x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε;
3. encode the distinct caption strings once, pick each sample's row; L = mean_b w_b·‖f_θ(x_t, t, text) − target‖²
   (``objective.diffusion_loss``: target ε, v or x₀; w = 1 without min-SNR-γ);
4. AdamW step at lr_k = lr·min(1, (k+1)/warmup) — constant after the warm-up, a function of the step only, so a
   resumed or time-limited run follows the same schedule; then the EMA update with decay
   min(ema_decay, (1+k)/(10+k)) (warm-up: early EMA weights are not dominated by the random initialisation).

Randomness: the initial weights from ``seed`` (``model.build_models``); every draw of the loop (indices, caption
choice, t, ε, in that order) from one CPU ``torch.Generator`` seeded with ``seed``, whose state is saved, so the
same seed and step count give bit-identical weights, resumed or not (on the same machine and thread count).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from lucid_app.guidance.ddim import add_noise
from lucid_app.learned_prior.data import TrainingData, draw_batch
from lucid_app.learned_prior.model import build_models, build_scheduler, parameter_count
from lucid_app.learned_prior.objective import Prediction, diffusion_loss
from lucid_app.priors.text import tokenize_padded

DEFAULT_BATCH_SIZE = 32
DEFAULT_MINUTES = 10.0


@dataclass(frozen=True)
class TrainSettings:
    """What a training session does. ``steps`` is the total step count to reach (None: no step limit), ``minutes``
    this session's wall-clock limit (None: none); it stops at whichever comes first. ``prediction`` and
    ``snr_gamma`` are the objective (:mod:`lucid_app.learned_prior.objective`; γ = 0: no weighting): v-prediction
    by default, the recipe on which the doctor measures r_ISM > 0 (docs/BENCHMARKS.md, "The prior doctor and an
    ISM-ready prior"; ε-prediction drifts)."""

    dataset: str
    out: str
    size: int = 32
    steps: int | None = None
    minutes: float | None = DEFAULT_MINUTES
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    log_every: int = 10
    checkpoint_s: float = 60.0
    sample_steps: int = 50
    sample_scale: float = 5.0
    prediction: Prediction = "v_prediction"
    snr_gamma: float = 0.0
    device: str = "cpu"


def lr_at(step: int, settings: TrainSettings) -> float:
    """Learning rate of the step after ``step`` steps: linear warm-up, then constant."""
    return settings.lr * min(1.0, (step + 1) / max(settings.warmup_steps, 1))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay after the ``step``-th update: min(decay, (1+step)/(10+step))."""
    return min(decay, (1.0 + step) / (10.0 + step))


class PriorTraining:
    """The state of one training: the models, optimizer, EMA weights, generator, step and loss log.

    Attributes:
        step: optimisation steps done.
        records: (step, mean loss since the previous record) every ``log_every`` steps.
        pending: the losses of the steps since the last record.
    """

    def __init__(self, data: TrainingData, tokenizer: CLIPTokenizer, settings: TrainSettings) -> None:
        self.data = data
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = torch.device(settings.device)
        self.unet, self.text_encoder = (m.to(self.device).train() for m in build_models(tokenizer, data.resolution,
                                                                                          settings.seed))
        self.alphas_cumprod = build_scheduler(settings.prediction).alphas_cumprod.to(self.device, torch.float32)
        self.text_ids = tokenize_padded(tokenizer, data.texts)[0].to(self.device)
        self.images = data.images.to(self.device)
        self.optimizer = torch.optim.AdamW(self._parameters(), lr=lr_at(0, settings),
                                           weight_decay=settings.weight_decay)
        self.ema = {name: p.detach().clone() for name, p in self._named_parameters()}
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step = 0
        self.records: list[tuple[int, float]] = []
        self.pending: list[float] = []

    def _named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(f"unet.{n}", p) for n, p in self.unet.named_parameters()] + [
            (f"text_encoder.{n}", p) for n, p in self.text_encoder.named_parameters()]

    def _parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self._named_parameters()]

    @property
    def params(self) -> dict[str, int]:
        return {"unet": parameter_count(self.unet), "text_encoder": parameter_count(self.text_encoder)}

    def train_step(self) -> float:
        """One optimisation step (module docstring); returns its loss."""
        batch = self.settings.batch_size
        index, text = draw_batch(self.data, batch, self.generator)
        t = torch.randint(0, self.alphas_cumprod.shape[0], (batch,), generator=self.generator)
        noise = torch.randn((batch, *self.images.shape[1:]), generator=self.generator).to(self.device)
        t = t.to(self.device)
        x0, alpha = self.images[index.to(self.device)], self.alphas_cumprod[t]
        x_t = add_noise(x0, noise, alpha)
        hidden = self.text_encoder(self.text_ids)[0][text.to(self.device)]
        pred = self.unet(x_t, t, encoder_hidden_states=hidden).sample
        loss = diffusion_loss(pred, x0, noise, alpha, self.settings.prediction, self.settings.snr_gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.settings)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self._update_ema()
        value = float(loss.detach())
        self._log(value)
        return value

    @torch.no_grad()
    def _update_ema(self) -> None:
        weight = 1.0 - ema_decay_at(self.step, self.settings.ema_decay)
        for name, param in self._named_parameters():
            self.ema[name].lerp_(param.detach(), weight)

    def _log(self, loss: float) -> None:
        self.pending.append(loss)
        if self.step % self.settings.log_every == 0:
            self.records.append((self.step, sum(self.pending) / len(self.pending)))
            self.pending = []

    def loss_records(self) -> list[tuple[int, float]]:
        """The log as written to ``loss.jsonl``: the records, plus the partial window up to the current step."""
        if not self.pending:
            return list(self.records)
        return [*self.records, (self.step, sum(self.pending) / len(self.pending))]

    def ema_models(self) -> tuple[UNet2DConditionModel, CLIPTextModel]:
        """Copies of the UNet and text encoder holding the EMA weights (in eval mode, on the CPU)."""
        unet, text_encoder = copy.deepcopy(self.unet).cpu(), copy.deepcopy(self.text_encoder).cpu()
        with torch.no_grad():
            for prefix, model in (("unet.", unet), ("text_encoder.", text_encoder)):
                for name, param in model.named_parameters():
                    param.copy_(self.ema[prefix + name])
        return unet.eval(), text_encoder.eval()

    def state_dict(self) -> dict[str, Any]:
        """Everything ``--resume`` needs (tensors, numbers and dicts only: loadable with ``weights_only=True``)."""
        return {
            "step": self.step,
            "unet": self.unet.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "ema": {name: value.cpu() for name, value in self.ema.items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "records": torch.tensor(self.records, dtype=torch.float64).reshape(-1, 2),
            "pending": torch.tensor(self.pending, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (raises ValueError when it does not fit these models)."""
        try:
            self.unet.load_state_dict(state["unet"])
            self.text_encoder.load_state_dict(state["text_encoder"])
            self.optimizer.load_state_dict(state["optimizer"])
            for name in self.ema:
                self.ema[name].copy_(state["ema"][name])
            self.generator.set_state(state["generator"])
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"the training state does not fit this prior's models ({err})") from None
        self.step = int(state["step"])
        self.records = [(int(s), float(v)) for s, v in state["records"].tolist()]
        self.pending = [float(v) for v in state["pending"].tolist()]


def train_loop(
    training: PriorTraining,
    stop: threading.Event,
    on_step: Callable[[float, float, float | None], None],
    checkpoint: Callable[[], None],
    seconds: list[float],
) -> None:
    """Train until ``settings.steps`` total steps, this session's ``settings.minutes``, or ``stop`` (checked after each
    batch, so a signal finishes the batch), whichever comes first; ``checkpoint()`` every ``checkpoint_s`` seconds.

    Args:
        training: the state, advanced in place.
        stop: set by Ctrl-C / SIGTERM (or a caller) to end after the current batch.
        on_step: called with (loss, seconds of the batch, seconds left or None) after each step (progress bar).
        checkpoint: writes the folder (no arguments).
        seconds: the wall seconds of each batch are appended to it (the pace ``checkpoint`` reports).
    """
    settings = training.settings
    start = last_save = time.perf_counter()
    deadline = start + 60.0 * settings.minutes if settings.minutes is not None else math.inf
    target = settings.steps if settings.steps is not None else math.inf
    while training.step < target and not stop.is_set():
        before = time.perf_counter()
        if before >= deadline:
            break
        loss = training.train_step()
        now = time.perf_counter()
        seconds.append(now - before)
        on_step(loss, now - before, None if math.isinf(deadline) else max(deadline - now, 0.0))
        if now - last_save >= settings.checkpoint_s:
            checkpoint()
            last_save = time.perf_counter()
