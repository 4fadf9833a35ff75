"""Reward-model loss on soft AI preference labels (RLAIF, Lee et al., 2023, arXiv:2309.00267)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soft_pairwise_loss(reward_a: Tensor, reward_b: Tensor, p_a: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy between softmax(r_a, r_b) and the AI label distribution (p_a, 1 - p_a), batch mean::

        L = -(1/B) sum_b [ p_a log sigma(r_a - r_b) + (1 - p_a) log sigma(r_b - r_a) ]

    Hard labels (p_a in {0, 1}) give the Bradley-Terry loss of RLHF reward models.

    Args:
        reward_a: ``[B]`` scalar rewards of the first responses.
        reward_b: ``[B]`` scalar rewards of the second responses.
        p_a: ``[B]`` probability that the first response is preferred.

    Returns:
        The scalar loss and detached metrics: ``accuracy`` (sign of r_a - r_b agrees with the label's argmax; ties
        p_a = 0.5 are left out) and ``margin`` (mean of (r_a - r_b) signed towards the preferred response).
    """
    diff = reward_a.float() - reward_b.float()
    p = p_a.to(diff.dtype)
    loss = -(p * F.logsigmoid(diff) + (1 - p) * F.logsigmoid(-diff)).mean()
    decided = p != 0.5
    sign = (p > 0.5).to(diff.dtype) * 2 - 1
    hits = ((diff > 0) == (p > 0.5)) & decided
    accuracy = hits.sum().to(diff.dtype) / decided.sum().clamp_min(1)
    margin = (diff * sign)[decided].mean() if decided.any() else diff.new_zeros(())
    return loss, {"accuracy": accuracy.detach(), "margin": margin.detach()}


__all__ = ["soft_pairwise_loss"]
