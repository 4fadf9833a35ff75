"""Supervised fine-tuning loss: negative log-likelihood of the completion tokens."""

from __future__ import annotations

from torch import Tensor


def sft_loss(logprobs: Tensor, mask: Tensor, argmax_hit: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Token-mean negative log-likelihood over the scored tokens of a batch.

    L = -(1 / sum_{b,t} m_{b,t}) * sum_{b,t} m_{b,t} * log p_theta(y_{b,t} | x_b, y_{b,<t})

    This is Hugging Face's default reduction (mean cross-entropy over non-masked tokens of the micro-batch), used
    for SFT and for Critique Fine-Tuning (Wang et al., 2025, arXiv:2501.17703), whose targets are critiques.

    Args:
        logprobs: ``[B, T]`` float32 log-probabilities of the target tokens.
        mask: ``[B, T]`` bool or 0/1, which tokens are scored (the completion).
        argmax_hit: Optional ``[B, T]`` bool, whether the argmax token equals the target (for token accuracy).

    Returns:
        The scalar loss and detached metrics: ``nll`` (same as the loss), ``tokens`` (count), and ``token_accuracy``
        when ``argmax_hit`` is given.
    """
    m = mask.to(logprobs.dtype)
    n = m.sum()
    loss = -(logprobs * m).sum() / n.clamp_min(1)
    metrics = {"nll": loss.detach(), "tokens": n.detach()}
    if argmax_hit is not None:
        metrics["token_accuracy"] = (argmax_hit.to(m.dtype) * m).sum().detach() / n.clamp_min(1)
    return loss, metrics


__all__ = ["sft_loss"]
