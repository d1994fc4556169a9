"""The splat viewer's copy (``model_view.ply``): a nearly transparent model (right after an opacity reset) is exposed,
so the viewer never shows a black canvas for a model that exists (issue 27); an opaque one is left as it is."""

from __future__ import annotations

import numpy as np
import pytest

from lucid_app.io.ply import GaussianPly
from lucid_app.io.splat_view import EXPOSED_OPACITY, exposed_opacities, framed_for_viewer


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _ply(opacities: np.ndarray, seed: int = 0) -> GaussianPly:
    rng = np.random.default_rng(seed)
    n = len(opacities)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    return GaussianPly(means=rng.normal(size=(n, 3)).astype(np.float32),
                       sh_dc=rng.normal(size=(n, 1, 3)).astype(np.float32),
                       sh_rest=np.zeros((n, 0, 3), np.float32), opacity_logits=_logit(opacities).astype(np.float32),
                       log_scales=np.full((n, 3), -3.0, np.float32), quats=quats / np.linalg.norm(quats, axis=1,
                                                                                                   keepdims=True))


def test_a_reset_model_is_exposed_by_one_power_that_keeps_the_order() -> None:
    """After a reset (every α = 0.01, a few regrown to 0.3): one k for all, α' = 1 − (1 − α)^k, with the 90th
    percentile at 0.5, so k = log(0.5) / log(0.99) — the closed form, checked independently."""
    alpha = np.full(100, 0.01)
    alpha[:5] = 0.3
    out = _sigmoid(exposed_opacities(_logit(alpha)))
    k = np.log(1 - EXPOSED_OPACITY) / np.log(1 - 0.01)
    np.testing.assert_allclose(out, 1 - (1 - alpha) ** k, rtol=1e-9)
    assert out[10] == pytest.approx(EXPOSED_OPACITY) and np.all(np.diff(out[4:6]) < 0)


def test_an_opaque_model_is_left_as_it_is() -> None:
    alpha = np.linspace(0.05, 0.999, 200)
    logits = _logit(alpha).astype(np.float32)
    np.testing.assert_array_equal(exposed_opacities(logits), logits)
    np.testing.assert_array_equal(exposed_opacities(np.array([40.0, 60.0], np.float32)), [40.0, 60.0])


def test_the_viewer_copy_of_a_reset_model_is_visible_and_framed_like_the_opaque_one() -> None:
    """Exposure changes the opacities only: the framing of a reset model equals that of the same model opaque."""
    reset = _ply(np.full(500, 0.01))
    opaque = _ply(np.full(500, 0.6))
    shown, reference = framed_for_viewer(reset), framed_for_viewer(opaque)
    assert np.percentile(_sigmoid(shown.opacity_logits.astype(np.float64)), 90) == pytest.approx(EXPOSED_OPACITY)
    np.testing.assert_allclose(shown.means, reference.means, atol=1e-6)
    np.testing.assert_allclose(shown.log_scales, reference.log_scales, atol=1e-6)
