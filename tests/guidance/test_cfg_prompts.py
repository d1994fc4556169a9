"""CFG, Perp-Neg and view-dependent prompts against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lucid_app.config import PromptConfig
from lucid_app.guidance.cfg import cfg_combine, perp_neg_combine, perpendicular_component
from lucid_app.guidance.prompts import encode_prompt_set, perp_neg_weights, view_prompt_texts, view_weights
from lucid_app.priors.base import PriorError


def test_cfg_uses_negative_as_unconditional() -> None:
    eps_neg = torch.tensor([[1.0, 2.0]])
    eps_pos = torch.tensor([[3.0, 1.0]])
    torch.testing.assert_close(cfg_combine(eps_neg, eps_pos, 7.5), torch.tensor([[16.0, -5.5]]))
    torch.testing.assert_close(cfg_combine(eps_neg, eps_pos, 1.0), eps_pos)


def test_perpendicular_component_per_sample() -> None:
    x = torch.tensor([[[3.0, 4.0]], [[1.0, 1.0]]])
    y = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    out = perpendicular_component(x, y)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 4.0]]))
    torch.testing.assert_close(out[1], x[1])  # zero reference direction leaves x unchanged


def test_perp_neg_combine_hand_computed() -> None:
    eps_neg = torch.tensor([[0.0, 0.0]])
    eps_pos = torch.tensor([[1.0, 0.0]])  # d+ = (1, 0)
    eps_views = torch.tensor([[[1.0, 1.0]], [[2.0, -3.0]]])  # d_front = (1, 1), d_side = (2, -3)
    weights = torch.tensor([[-2.0, 0.5]])
    # d+ + (−2)·(0, 1) + 0.5·(0, −3) = (1, −3.5); ε̂ = 0 + 2·(1, −3.5)
    out = perp_neg_combine(eps_neg, eps_pos, eps_views, weights, 2.0)
    torch.testing.assert_close(out, torch.tensor([[2.0, -7.0]]))
    # With zero weights it is plain CFG.
    torch.testing.assert_close(
        perp_neg_combine(eps_neg, eps_pos, eps_views, torch.zeros(1, 2), 2.0), cfg_combine(eps_neg, eps_pos, 2.0)
    )


@pytest.mark.parametrize(
    ("azimuth", "expected"),
    [
        (0.0, (1.0, 0.0, 0.0)),
        (45.0, (0.5, 0.5, 0.0)),
        (-45.0, (0.5, 0.5, 0.0)),
        (90.0, (0.0, 1.0, 0.0)),
        (-90.0, (0.0, 1.0, 0.0)),
        (135.0, (0.0, 0.5, 0.5)),
        (-135.0, (0.0, 0.5, 0.5)),
        (180.0, (0.0, 0.0, 1.0)),
        (-180.0, (0.0, 0.0, 1.0)),
        (270.0, (0.0, 1.0, 0.0)),
        (30.0, (2.0 / 3.0, 1.0 / 3.0, 0.0)),
    ],
)
def test_view_weights(azimuth: float, expected: tuple[float, float, float]) -> None:
    torch.testing.assert_close(view_weights(torch.tensor([azimuth])), torch.tensor([expected]))


def test_view_weights_are_continuous_and_convex() -> None:
    az = torch.linspace(-360.0, 360.0, 2881)
    w = view_weights(az)
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(len(az)))
    assert (w[1:] - w[:-1]).abs().max() < 0.01


def test_perp_neg_reference_weights() -> None:
    w = perp_neg_weights(torch.tensor([0.0, 45.0, -45.0, 90.0, 135.0, 180.0, 81.0]))
    e = math.exp
    expected = torch.tensor(
        [
            [0.0, -2.0],  # front: r = 1 -> front weight off, side e^0·(−2)
            [e(-1.0) * -2, e(-5.0) * -2],  # r = 0.5
            [e(-1.0) * -2, e(-5.0) * -2],
            [-2.0, 0.0],  # back half, r = 1: side weight off, front −2
            [-2.0, e(-5.0) * -1],  # back half, r = 0.5: side e^(−r·10)·(−2)/2
            [-2.0, -1.0],  # back: r = 0
            [e(-0.2) * -2, 0.0],  # r = 0.1 < 0.2: side weight off
        ]
    )
    torch.testing.assert_close(w, expected)


class _RecordingPrior:
    """Conditioning = [len(text), 1]; raises PriorError for texts starting with "?"."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        if any(t.startswith("?") for t in texts):
            raise PriorError("not understood")
        return torch.tensor([[float(len(t)), 1.0] for t in texts])


def test_encode_prompt_set_views_negative_and_interpolation() -> None:
    prior = _RecordingPrior()
    cfg = PromptConfig(text="a cat", negative="blurry", inverse_text="")
    prompts = encode_prompt_set(prior, cfg)
    assert view_prompt_texts(cfg) == ["a cat, front view", "a cat, side view", "a cat, back view"]
    assert prior.calls[0] == ["a cat", "a cat, front view", "a cat, side view", "a cat, back view", ""]
    torch.testing.assert_close(prompts.negative, torch.tensor([[6.0, 1.0]]))
    torch.testing.assert_close(prompts.inverse, torch.tensor([[0.0, 1.0]]))  # "" = unconditional
    pos = prompts.positive(torch.tensor([0.0, 45.0, 180.0]))
    front, side, back = 17.0, 16.0, 16.0
    torch.testing.assert_close(pos[:, 0], torch.tensor([front, 0.5 * (front + side), back]))
    flat = encode_prompt_set(prior, PromptConfig(text="a cat", view_dependent=False)).positive(torch.zeros(2))
    torch.testing.assert_close(flat, torch.tensor([[5.0, 1.0], [5.0, 1.0]]))


def test_uninterpretable_negative_falls_back_to_unconditional_but_positive_raises() -> None:
    prompts = encode_prompt_set(_RecordingPrior(), PromptConfig(text="a cat", negative="?junk", inverse_text="?x"))
    torch.testing.assert_close(prompts.negative, torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(prompts.inverse, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(PriorError):
        encode_prompt_set(_RecordingPrior(), PromptConfig(text="?cat"))
