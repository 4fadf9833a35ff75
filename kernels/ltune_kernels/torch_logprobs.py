"""Exact torch path of per-token log-probs from logits you already have (kernel (a)).

Forward, per valid row ``i`` (``z = logits / T``, computed in float32, or float64 for float64 inputs)::

    logp_i = log_softmax(z_i)_t_i,   LSE_i = z_i,t_i - logp_i  (saved)
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


def _is_range(rows: Tensor) -> bool:
    return int(rows[-1]) - int(rows[0]) + 1 == rows.numel()


def take_rows(x: Tensor, rows: Tensor) -> Tensor:
    """``x[rows]``: a view when ``rows`` is a contiguous ascending range (the common all-valid case), else a copy."""
    return x[int(rows[0]) : int(rows[-1]) + 1] if _is_range(rows) else x.index_select(0, rows)


def chunk_logprobs(z: Tensor, tgt: Tensor, with_entropy: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """``z [c, V]`` (already divided by T) -> ``(logp [c], lse [c], entropy [c] | None)`` in ``z.dtype``."""
    lp_all = torch.log_softmax(z, dim=-1)
    logp = lp_all.gather(1, tgt.unsqueeze(1)).squeeze(1)
    lse = z.gather(1, tgt.unsqueeze(1)).squeeze(1) - logp
    entropy = -(lp_all.exp() * lp_all).sum(-1) if with_entropy else None
    return logp, lse, entropy


def dlogits_from_shifted_(e: Tensor, tgt: Tensor, g: Tensor, temperature: float) -> Tensor:
    """Overwrite ``e [c, V]``, holding ``z - LSE`` (z = logits / T), with ``g (onehot(tgt) - exp(e)) / T``."""
    gs = (g.to(e.dtype) / temperature).unsqueeze(1)
    e.exp_().mul_(-gs)
    return e.scatter_add_(1, tgt.unsqueeze(1), gs)


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
            x = take_rows(logits, rows)
            if with_argmax:
                hit[rows] = x.argmax(-1) == tgt
            z = x.to(cdt) / temperature if temperature != 1.0 else x.to(cdt)  # never in place: may be the caller's
            lp_c, lse_c, ent_c = chunk_logprobs(z, tgt, with_entropy)
            logp[rows] = lp_c.float()
            lse[start : start + step] = lse_c
            if with_entropy:
                entropy[rows] = ent_c.float()
        ctx.save_for_backward(logits, targets, lse, idx)
        ctx.temperature, ctx.ignore_index = temperature, ignore_index
        ctx.mark_non_differentiable(entropy, hit)
        return logp, entropy, hit

    @staticmethod
    def backward(ctx, grad_logp: Tensor | None, _grad_entropy: Tensor | None, _grad_hit: Tensor | None):
        logits, targets, lse, idx = ctx.saved_tensors
        if grad_logp is None or not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        temperature = ctx.temperature
        grad = torch.empty_like(logits)
        grad.index_fill_(0, (targets == ctx.ignore_index).nonzero().squeeze(1), 0)  # the rest is written below
        step = _row_chunk(logits.shape[1])
        for start in range(0, idx.numel(), step):
            rows = idx[start : start + step]
            x = take_rows(logits, rows)
            neg_lse = lse[start : start + step].neg().unsqueeze(1)
            direct = _is_range(rows) and grad.dtype == lse.dtype  # write straight into the gradient rows
            e = torch.add(neg_lse, x, alpha=1.0 / temperature, out=take_rows(grad, rows) if direct else None)
            d = dlogits_from_shifted_(e, targets[rows], grad_logp[rows], temperature)
            if not direct:
                grad.index_copy_(0, rows, d.to(grad.dtype))
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
