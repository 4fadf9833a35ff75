"""Pure-torch references for the ltune kernels.

These are the *definitions*: short, obviously correct, and written for readability, not memory. They run in the
dtype you hand them (pass float64 tensors for a ground truth) and materialise the full ``[tokens, V]`` logits, so
use them for tests and documentation only. The production paths are :mod:`ltune.kernels.torch_logprobs`,
:mod:`ltune.kernels.torch_linear` (exact, chunked torch) and the Triton kernels, reached through
:mod:`ltune.kernels.dispatch`.

Notation: ``z = logits / T``; ``LSE = log sum_v exp(z_v)``; ``log p(t) = z_t - LSE``;
``H = LSE - sum_v softmax(z)_v z_v`` (entropy, nats).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def reference_token_logprobs(
    logits: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token log-probs, entropy and argmax hits by ``log_softmax`` + ``gather``.

    Args:
        logits: ``[..., V]`` logits in any float dtype; the computation runs in that dtype (use float64 for truth).
        targets: ``[...]`` token ids (long); ``ignore_index`` marks positions to skip.
        temperature: ``T > 0``; the distribution is ``softmax(logits / T)``.
        ignore_index: target value whose positions get 0 log-prob, 0 entropy and ``False`` argmax hit.

    Returns:
        ``(logprobs, entropy, argmax_hit)``, each of shape ``targets.shape``; the first two in ``logits.dtype``
        (differentiable w.r.t. ``logits``), the last bool.
    """
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
    logp_all = F.log_softmax(logits / temperature, dim=-1)
    logp = logp_all.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    hit = (logits.argmax(-1) == targets) & valid
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(valid, logp, zero), torch.where(valid, entropy, zero), hit


def reference_linear_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token log-probs of ``hidden @ weight.T + bias``: the matmul first, then :func:`reference_token_logprobs`.

    ``log p(t) = (h . W[t] + b[t]) / T - logsumexp_v((h . W[v] + b[v]) / T)``.

    Args:
        hidden: ``[..., H]`` final hidden states.
        weight: ``[V, H]`` output embedding (lm_head weight).
        targets: ``[...]`` token ids (long).
        bias: optional ``[V]`` output bias.
        temperature: ``T > 0``.
        ignore_index: target value to skip.

    Returns:
        ``(logprobs, entropy, argmax_hit)`` as in :func:`reference_token_logprobs`, in the input dtype.
    """
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits + bias
    return reference_token_logprobs(logits, targets, temperature=temperature, ignore_index=ignore_index)


def reference_log1mexp(x: Tensor) -> Tensor:
    """Stable ``log(1 - exp(x))`` for ``x < 0``: ``log(-expm1(x))`` for ``x > -ln 2``, else ``log1p(-exp(x))``."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def reference_odds_ratio_loss(
    mean_logp_chosen: Tensor, mean_logp_rejected: Tensor, clamp: float | None = None
) -> tuple[Tensor, Tensor]:
    """ORPO odds-ratio term (Hong et al. 2024, arXiv 2403.07691), per pair, by plain autograd.

    ``log_odds = (lp_c - lp_r) - (log(1 - e^lp_c) - log(1 - e^lp_r))``; ``loss = -logsigmoid(log_odds)``.

    Args:
        mean_logp_chosen: ``[B]`` length-averaged log-prob of each chosen completion (``< 0``).
        mean_logp_rejected: ``[B]`` the same for each rejected completion.
        clamp: If given, inputs are clamped to ``<= -clamp`` first, as the kernels do (a mean log-prob of 0 would
            make ``log(1 - e^0)`` infinite); ``None`` computes the formula as written.

    Returns:
        ``(loss_per_pair, log_odds)``, both ``[B]`` in the input dtype.
    """
    if clamp is not None:
        mean_logp_chosen, mean_logp_rejected = (x.clamp(max=-clamp) for x in (mean_logp_chosen, mean_logp_rejected))
    log_odds = (mean_logp_chosen - mean_logp_rejected) - (
        reference_log1mexp(mean_logp_chosen) - reference_log1mexp(mean_logp_rejected)
    )
    return -F.logsigmoid(log_odds), log_odds
