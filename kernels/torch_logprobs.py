"""Exact torch path of per-token log-probs from logits you already have (kernel (a)).

Forward, per valid row ``i`` (``z = logits / T``, computed in float32, or float64 for float64 inputs)::

    LSE_i  = logsumexp_v z_iv
    logp_i = z_i,t_i - LSE_i
    H_i    = LSE_i - sum_v softmax(z_i)_v z_iv          (optional, detached)
    hit_i  = argmax_v logits_iv == t_i                  (optional)

Backward with an arbitrary upstream gradient ``g_i`` (rows of ignored targets get zero gradient)::

    dlogits_iv = g_i * (onehot(t_i)_v - exp(z_iv - LSE_i)) / T

Memory: the forward saves the caller's logits (no copy), the targets, the valid-row indices and one LSE per valid
row. Temporaries are float32 row chunks of ``chunk_rows x V``; the only ``[N, V]`` allocation is the gradient itself,
in the logits' dtype. The caller's logits are never written.
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 22  # ~16 MiB of float32 temporaries per row chunk


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (for ground-truth tests); every other float dtype computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_chunk(vocab: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(vocab, 1))


class TokenLogProbsTorch(torch.autograd.Function):
    """Autograd Function for the torch path; inputs are flattened: ``logits [N, V]``, ``targets [N]``.

    Returns ``(logprobs [N] fp32, entropy [N] fp32 or [0], argmax_hit [N] bool or [0])``; only ``logprobs`` has a
    gradient.
    """

    @staticmethod
    def forward(
        ctx,
        logits: Tensor,
        targets: Tensor,
        temperature: float,
        ignore_index: int,
        with_entropy: bool,
        with_argmax: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n, vocab = logits.shape
        cdt = compute_dtype(logits.dtype)
        idx = (targets != ignore_index).nonzero().squeeze(1)
        logp = torch.zeros(n, dtype=torch.float32, device=logits.device)
        entropy = torch.zeros(n if with_entropy else 0, dtype=torch.float32, device=logits.device)
        hit = torch.zeros(n if with_argmax else 0, dtype=torch.bool, device=logits.device)
        lse = torch.empty(idx.numel(), dtype=cdt, device=logits.device)
        step = _row_chunk(vocab)
        for start in range(0, idx.numel(), step):
            rows = idx[start : start + step]
            tgt = targets[rows]
            x = logits.index_select(0, rows).to(cdt)  # a copy: the caller's tensor is never written
            if with_argmax:
                hit[rows] = x.argmax(-1) == tgt
            x.div_(temperature)
            lse_c = torch.logsumexp(x, dim=-1)
            lse[start : start + step] = lse_c
            logp[rows] = (x.gather(1, tgt.unsqueeze(1)).squeeze(1) - lse_c).float()
            if with_entropy:
                p = torch.exp(x - lse_c.unsqueeze(1))
                entropy[rows] = (lse_c - (p * x).sum(-1)).float()
        ctx.save_for_backward(logits, targets, lse, idx)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(entropy, hit)
        return logp, entropy, hit

    @staticmethod
    def backward(ctx, grad_logp: Tensor | None, _grad_entropy: Tensor | None, _grad_hit: Tensor | None):
        logits, targets, lse, idx = ctx.saved_tensors
        if grad_logp is None or not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        temperature = ctx.temperature
        cdt = lse.dtype
        grad = torch.zeros_like(logits)
        step = _row_chunk(logits.shape[1])
        for start in range(0, idx.numel(), step):
            rows = idx[start : start + step]
            g = grad_logp[rows].to(cdt).unsqueeze(1)
            d = logits.index_select(0, rows).to(cdt)
            d.div_(temperature).sub_(lse[start : start + step].unsqueeze(1)).exp_().mul_(-g)  # -g * softmax
            d.scatter_add_(1, targets[rows].unsqueeze(1), g)
            grad[rows] = d.div_(temperature).to(grad.dtype)
        return grad, None, None, None, None, None


def token_logprobs_torch(
    logits: Tensor,
    targets: Tensor,
    *,
    temperature: float,
    ignore_index: int,
    with_entropy: bool,
    with_argmax: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened torch path: ``logits [N, V]``, ``targets [N]`` -> ``(logp [N], entropy [N]|[0], hit [N]|[0])``."""
    return TokenLogProbsTorch.apply(logits, targets, temperature, ignore_index, with_entropy, with_argmax)
