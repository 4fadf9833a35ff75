"""RLSC: reinforcement learning via self-confidence (mode sharpening), Li et al., 2025, arXiv:2506.06395."""

from __future__ import annotations

import torch
from torch import Tensor


def rlsc_loss(
    logprobs: Tensor,
    mask: Tensor,
    alpha: float = 0.1,
    length_normalized_weight: bool = False,
    weight_order: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Smoothed self-confidence loss over N completions sampled from the model itself (paper Algorithm 1, L2)::

        s_i = sum_t m_{i,t} log softmax(z_{i,t} / T)[y_{i,t}]      (tempered, summed over the answer tokens)
        L   = (1/N) sum_i -(exp(sg[s_i]) + alpha) * s_i

    The gradient is the Monte-Carlo estimate of -grad sum_y p(y|x)^2 (the probability that two samples agree) plus
    alpha times the self-distillation term. For long completions exp(s_i) underflows to ~0 and the loss becomes
    alpha * NLL of the samples; ``length_normalized_weight=True`` uses exp(sg[s_i] / |y_i|) instead — a non-paper
    variant.

    Args:
        logprobs: ``[N, C]`` tempered log-probs of the sampled completion tokens (with gradient).
        mask: ``[N, C]`` 1 on the answer (completion) tokens.
        alpha: Smoothing constant (paper: 0.1).
        length_normalized_weight: Weight by the per-token geometric mean probability (not in the paper).
        weight_order: ``[N]`` indices: completion i is weighted by completion ``weight_order[i]``'s confidence
            (a permutation within each prompt's group is the placebo control: the same weights, detached from the
            completions they measured). None: each completion its own (the paper).

    Returns:
        The scalar loss and detached metrics: ``seq_logprob`` (mean s_i), ``weight`` (mean exp(s_i) or its
        length-normalised form), ``alpha``.
    """
    m = mask.to(logprobs.dtype)
    s = (logprobs * m).sum(1)
    log_w = s.detach() / m.sum(1).clamp_min(1) if length_normalized_weight else s.detach()
    weight = torch.exp(log_w)
    if weight_order is not None:
        weight = weight[weight_order]
    loss = (-(weight + alpha) * s).mean()
    return loss, {"seq_logprob": s.mean().detach(), "weight": weight.mean(), "alpha": torch.tensor(alpha)}


__all__ = ["rlsc_loss"]
