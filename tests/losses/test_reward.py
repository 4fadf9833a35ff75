"""Soft-label reward-model loss against hand computations."""

import math

import pytest
import torch

from ltune.losses.reward import soft_pairwise_loss


def _logsig(x):
    return -math.log1p(math.exp(-x))


def test_soft_labels_by_hand():
    ra, rb, p = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.5, 2.0]), torch.tensor([0.9, 0.2, 0.5])
    loss, m = soft_pairwise_loss(ra, rb, p)
    d = [1.0, -0.5, 0.0]
    hand = -sum(pi * _logsig(di) + (1 - pi) * _logsig(-di) for pi, di in zip([0.9, 0.2, 0.5], d)) / 3
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    assert m["accuracy"].item() == 1.0  # both decided pairs ranked right; the 0.5 tie is left out
    assert m["margin"].item() == pytest.approx((1.0 + 0.5) / 2)


def test_hard_labels_are_bradley_terry_and_gradient():
    ra = torch.tensor([0.3, -1.0], requires_grad=True)
    rb = torch.tensor([0.0, 0.0])
    loss, m = soft_pairwise_loss(ra, rb, torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx(-(_logsig(0.3) + _logsig(-1.0)) / 2, rel=1e-6)
    assert m["accuracy"].item() == 0.5
    loss.backward()  # d/dr_a = -(p - sigma(d)) / B
    torch.testing.assert_close(ra.grad, -(1 - torch.sigmoid(torch.tensor([0.3, -1.0]))) / 2)
