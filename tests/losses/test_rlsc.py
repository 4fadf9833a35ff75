"""RLSC loss against hand computations."""

import math

import pytest
import torch

from ltune.losses.rlsc import rlsc_loss

LOGP = torch.tensor([[-0.1, -0.2, -5.0], [-0.5, -0.3, -0.2]])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])  # row 0's third token is padding


def test_value_and_gradient_by_hand():
    lp = LOGP.clone().requires_grad_(True)
    loss, m = rlsc_loss(lp, MASK, alpha=0.1)
    s0, s1 = -0.3, -1.0  # summed over the answer tokens
    w0, w1 = math.exp(s0), math.exp(s1)
    assert loss.item() == pytest.approx((-(w0 + 0.1) * s0 - (w1 + 0.1) * s1) / 2, rel=1e-6)
    assert m["seq_logprob"].item() == pytest.approx((s0 + s1) / 2)
    assert m["weight"].item() == pytest.approx((w0 + w1) / 2, rel=1e-6)
    loss.backward()  # the weight is a stop-gradient: d loss / d logp_{i,t} = -(w_i + alpha) m_{i,t} / N
    expected = torch.tensor([[-(w0 + 0.1) / 2] * 2 + [0.0], [-(w1 + 0.1) / 2] * 3])
    torch.testing.assert_close(lp.grad, expected)


def test_alpha_zero_is_the_basic_loss_and_length_normalised_variant():
    loss, _ = rlsc_loss(LOGP, MASK, alpha=0.0)
    assert loss.item() == pytest.approx((math.exp(-0.3) * 0.3 + math.exp(-1.0) * 1.0) / 2, rel=1e-6)
    loss, m = rlsc_loss(LOGP, MASK, alpha=0.1, length_normalized_weight=True)
    w0, w1 = math.exp(-0.3 / 2), math.exp(-1.0 / 3)
    assert m["weight"].item() == pytest.approx((w0 + w1) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(((w0 + 0.1) * 0.3 + (w1 + 0.1) * 1.0) / 2, rel=1e-6)


def test_weight_stays_finite_for_long_completions():
    lp = torch.full((2, 4000), -1.0, requires_grad=True)  # s = -4000: exp underflows to 0, the loss is alpha*NLL
    loss, m = rlsc_loss(lp, torch.ones(2, 4000), alpha=0.1)
    assert m["weight"].item() == 0.0 and loss.item() == pytest.approx(400.0)
    loss.backward()
    assert torch.isfinite(lp.grad).all()


def test_placebo_swaps_the_weights_between_completions():
    """weight_order [1, 0]: completion 0 takes completion 1's confidence and back; gradients follow by hand."""
    lp = LOGP.clone().requires_grad_(True)
    loss, m = rlsc_loss(lp, MASK, alpha=0.1, weight_order=torch.tensor([1, 0]))
    s0, s1, w0, w1 = -0.3, -1.0, math.exp(-0.3), math.exp(-1.0)
    assert loss.item() == pytest.approx((-(w1 + 0.1) * s0 - (w0 + 0.1) * s1) / 2, rel=1e-6)
    assert m["weight"].item() == pytest.approx((w0 + w1) / 2, rel=1e-6)  # the same weights, reassigned
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[-(w1 + 0.1) / 2] * 2 + [0.0], [-(w0 + 0.1) / 2] * 3]))
