"""The training loss terms besides the guidance (``lucid_app.train.losses``) against the official formulas: the batch
flip with its control, the official TV loss, the min-max normalised disparity."""

from __future__ import annotations

import math

import torch

from lucid_app.train.losses import flip_views, minmax_disparity, total_variation


def test_flip_views_flips_the_whole_batch_with_its_control() -> None:
    images = torch.arange(2 * 3 * 4 * 3, dtype=torch.float32).reshape(2, 3, 4, 3)
    control = torch.rand(2, 3, 4, 3)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    same, same_control, flipped = flip_views(images, 0.0, g, control)
    assert same is images and same_control is control and not flipped
    assert torch.equal(g.get_state(), state)  # ratio 0 draws nothing
    out, out_control, flipped = flip_views(images, 1.0, g, control)
    assert flipped and torch.equal(out, images.flip(2)) and torch.equal(out_control, control.flip(2))
    directions = torch.rand(2, 3)
    assert flip_views(images, 1.0, g, directions)[1] is directions
    coins = [flip_views(images, 0.5, g)[2] for _ in range(400)]
    assert 0.4 < sum(coins) / len(coins) < 0.6


def test_total_variation_l2_equals_the_official_formula() -> None:
    x = torch.rand(3, 7, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # Official tv_loss on [B, K, H, W]: 2·(Σdy²/(K(H−1)W) + Σdx²/(KH(W−1)))/B.
    y = x.permute(0, 3, 1, 2)
    B, K, H, W = y.shape
    h_tv = (y[:, :, 1:, :] - y[:, :, :-1, :]).pow(2).sum()
    w_tv = (y[:, :, :, 1:] - y[:, :, :, :-1]).pow(2).sum()
    official = 2 * (h_tv / (K * (H - 1) * W) + w_tv / (K * H * (W - 1))) / B
    torch.testing.assert_close(total_variation(x, "l2"), official)
    l1 = (x[:, :, 1:] - x[:, :, :-1]).abs().mean() + (x[:, 1:] - x[:, :-1]).abs().mean()
    torch.testing.assert_close(total_variation(x, "l1"), l1)


def test_minmax_disparity_spans_zero_to_one_per_view() -> None:
    depth = torch.tensor([[1.0, 2.0], [4.0, 0.0]]).reshape(1, 2, 2, 1).repeat(2, 1, 1, 1) * torch.tensor(
        [1.0, 3.0]).reshape(2, 1, 1, 1)
    alpha = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).reshape(1, 2, 2, 1).repeat(2, 1, 1, 1)
    d = minmax_disparity(depth, alpha)
    for view in d:
        assert float(view.min()) == 0.0 and math.isclose(float(view.max()), 1.0)
    # Nearest surface is 1, the background 0, in between 1/z scaled: (1/2 − 0)/(1 − 0) = 0.5.
    assert math.isclose(float(d[0, 0, 1, 0]), 0.5) and math.isclose(float(d[1, 1, 0, 0]), 0.25)
