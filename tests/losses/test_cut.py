"""CUT loss: hand-computed numbers for both weightings, detached detection, MLE-only batches, floor of 1 - p."""

import math

import pytest
import torch

from ltune.losses.cut import cut_loss

ln = math.log


def _tokens():
    """Aligned tokens p = 0.5, 0.25. Three Misalign tokens: p(y|x, j-) = 0.6, 0.2, 0.9 and p(y|x) = 0.5, 0.2, 0.3,
    so the ratios are 1.2, 1.0, 3.0 and threshold 1.1 flags tokens 1 and 3."""
    aligned = torch.log(torch.tensor([0.5, 0.25]))
    judged = torch.log(torch.tensor([0.6, 0.2, 0.9])).requires_grad_()
    misaligned = torch.log(torch.tensor([0.5, 0.2, 0.3])).requires_grad_()
    return aligned, judged, misaligned


def test_paper_weighting_by_hand():
    """alpha = 0.5, gamma = 2: w = 0.5 * 0.6^2 = 0.18 and 0.5 * 0.9^2 = 0.405.

    L_MLE = (ln 2 + ln 4) / 2 = 1.5 ln 2
    L_mis = (0.18 * -ln(1 - 0.5) + -ln 0.2 + 0.405 * -ln(1 - 0.3)) / 3 = (0.18 ln 2 + ln 5 - 0.405 ln 0.7) / 3
    L     = (L_MLE + L_mis) / 2
    """
    aligned, judged, misaligned = _tokens()
    loss, m = cut_loss(aligned, judged, misaligned, threshold=1.1, weighting="paper", alpha=0.5, gamma=2.0)
    mis = (0.18 * ln(2) + ln(5) - 0.405 * ln(0.7)) / 3
    assert m["mle_loss"].item() == pytest.approx(1.5 * ln(2), rel=1e-6)
    assert m["misalign_loss"].item() == pytest.approx(mis, rel=1e-5)
    assert loss.item() == pytest.approx((1.5 * ln(2) + mis) / 2, rel=1e-5)
    assert m["ul_token_frac"].item() == pytest.approx(2 / 3)
    assert m["ratio_mean"].item() == pytest.approx(5.2 / 3, rel=1e-5)
    assert m["p_flagged"].item() == pytest.approx(0.4, rel=1e-5)
    loss.backward()
    assert judged.grad is None  # the ratio and the weight are detached
    # d/d lp of -w log(1 - e^lp) = w p / (1 - p); of -lp = -1; each over 3 tokens, halved
    expected = torch.tensor([0.18 * 0.5 / 0.5, -1.0, 0.405 * 0.3 / 0.7]) / 3 / 2
    torch.testing.assert_close(misaligned.grad, expected)


def test_constant_weighting_by_hand():
    """The released code's weight_unlike = 0.5: L_mis = (0.5 ln 2 + ln 5 - 0.5 ln 0.7) / 3."""
    aligned, judged, misaligned = _tokens()
    loss, m = cut_loss(aligned, judged, misaligned, weighting="constant", alpha=0.5)
    assert m["misalign_loss"].item() == pytest.approx((0.5 * ln(2) + ln(5) - 0.5 * ln(0.7)) / 3, rel=1e-5)


def test_threshold_decides_the_flagged_tokens():
    aligned, judged, misaligned = _tokens()
    _, m = cut_loss(aligned, judged, misaligned, threshold=2.0)
    assert m["ul_token_frac"].item() == pytest.approx(1 / 3)
    _, m = cut_loss(aligned, judged, misaligned, threshold=1e9)  # nothing flagged: MLE on every Misalign token
    assert m["misalign_loss"].item() == pytest.approx((ln(2) + ln(5) + ln(1 / 0.3)) / 3, rel=1e-5)


def test_batch_without_negatives_is_mle_only():
    aligned = torch.log(torch.tensor([0.5, 0.25]))
    loss, m = cut_loss(aligned, torch.empty(0), torch.empty(0))
    assert loss.item() == pytest.approx(1.5 * ln(2)) and m["ul_token_frac"].item() == 0


def test_probability_one_is_floored_not_infinite():
    lp = torch.tensor([0.0, -1e-9], requires_grad=True)
    loss, _ = cut_loss(torch.tensor([-1.0]), torch.tensor([0.0, 0.0]), lp, threshold=0.5, weighting="constant")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    assert loss.item() == pytest.approx((1.0 + -ln(1e-5)) / 2, rel=1e-3)
