"""Exact torch path of fused linear + per-token log-probs (kernel (b)), chunked over tokens.

For each valid token ``i`` (target ``t_i != ignore_index``), with ``z_i = (h_i W^T + b) / T`` in float32::

    logp_i = z_i,t_i - LSE_i,     LSE_i = logsumexp_v z_iv

The ``[N, V]`` logits are never materialised: valid tokens are compacted first (ignored tokens cost nothing) and
processed ``chunk_size`` at a time. The forward saves only ``hidden``, ``weight``, ``bias``, ``targets``, the
valid-token indices and one LSE per valid token. The backward recomputes each chunk's logits and applies an
arbitrary per-token upstream gradient ``g_i``::

    dlogits_iv  = g_i * (onehot(t_i)_v - exp(z_iv - LSE_i)) / T          [c, V] fp32, one chunk at a time
    grad_hidden = dlogits @ W                                            [c, H]
    grad_weight += dlogits^T @ h                                         [V, H], fp32 accumulator
    grad_bias   += sum_i dlogits_i                                       [V],    fp32 accumulator

Memory beyond the inputs: O(chunk_size x V) float32 temporaries, O(tokens) saved state, the ``[V, H]`` fp32
gradient accumulator (only when the weight needs a gradient) and, for low-precision weights, one float32 copy of
``W`` per call (CPU has no mixed-precision matmul; the Triton path needs neither).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .torch_logprobs import chunk_logprobs, compute_dtype, dlogits_from_shifted_, take_rows


def _chunk_logits(h: Tensor, weight_c: Tensor, bias_c: Tensor | None) -> Tensor:
    """``h [c, H] @ W^T (+ b)`` in the compute dtype -> ``[c, V]``."""
    logits = h @ weight_c.T
    if bias_c is not None:
        logits.add_(bias_c)
    return logits


class LinearLogProbsTorch(torch.autograd.Function):
    """Autograd Function for the torch path; ``hidden [N, H]``, ``weight [V, H]``, ``bias [V] | None``, ``targets [N]``.

    Returns ``(logprobs [N] fp32, entropy [N] fp32 or [0], argmax_hit [N] bool or [0])``; only ``logprobs`` has a
    gradient, which flows to ``hidden``, ``weight`` and ``bias``.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        temperature: float,
        ignore_index: int,
        with_entropy: bool,
        with_argmax: bool,
        chunk_size: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n = hidden.shape[0]
        cdt = compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))
        weight_c = weight.to(cdt)
        bias_c = None if bias is None else bias.to(cdt)
        idx = (targets != ignore_index).nonzero().squeeze(1)
        dev = hidden.device
        logp = torch.zeros(n, dtype=torch.float32, device=dev)
        entropy = torch.zeros(n if with_entropy else 0, dtype=torch.float32, device=dev)
        hit = torch.zeros(n if with_argmax else 0, dtype=torch.bool, device=dev)
        lse = torch.empty(idx.numel(), dtype=cdt, device=dev)
        for start in range(0, idx.numel(), chunk_size):
            rows = idx[start : start + chunk_size]
            tgt = targets[rows]
            z = _chunk_logits(take_rows(hidden, rows).to(cdt), weight_c, bias_c)
            if with_argmax:
                hit[rows] = z.argmax(-1) == tgt
            if temperature != 1.0:
                z.div_(temperature)
            lp_c, lse_c, ent_c = chunk_logprobs(z, tgt, with_entropy)
            logp[rows] = lp_c.float()
            lse[start : start + chunk_size] = lse_c
            if with_entropy:
                entropy[rows] = ent_c.float()
            del z
        ctx.save_for_backward(hidden, weight, bias, targets, lse, idx)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(entropy, hit)
        return logp, entropy, hit

    @staticmethod
    def backward(ctx, grad_logp: Tensor | None, _grad_entropy: Tensor | None, _grad_hit: Tensor | None):
        hidden, weight, bias, targets, lse, idx = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        none_tail = (None,) * 6
        if grad_logp is None or not (need_h or need_w or need_b):
            return (None, None, None, *none_tail)
        temperature, chunk_size, cdt = ctx.temperature, ctx.chunk_size, lse.dtype
        weight_c = weight.to(cdt)
        bias_c = None if bias is None else bias.to(cdt)
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=cdt, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=cdt, device=bias.device) if need_b else None
        for start in range(0, idx.numel(), chunk_size):
            rows = idx[start : start + chunk_size]
            h = take_rows(hidden, rows).to(cdt)
            z = _chunk_logits(h, weight_c, bias_c)
            if temperature != 1.0:
                z.div_(temperature)
            z.sub_(lse[start : start + chunk_size].unsqueeze(1))
            d = dlogits_from_shifted_(z, targets[rows], grad_logp[rows], temperature)
            if grad_h is not None:
                grad_h[rows] = (d @ weight_c).to(grad_h.dtype)
            if grad_w is not None:
                grad_w.addmm_(d.T, h)
            if grad_b is not None:
                grad_b += d.sum(0)
            del d
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        grad_b = None if grad_b is None else grad_b.to(bias.dtype)
        return (grad_h, grad_w, grad_b, *none_tail)


def linear_token_logprobs_torch(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None,
    temperature: float,
    ignore_index: int,
    with_entropy: bool,
    with_argmax: bool,
    chunk_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened torch path: ``hidden [N, H]``, ``targets [N]`` -> ``(logp [N], entropy [N]|[0], hit [N]|[0])``."""
    return LinearLogProbsTorch.apply(
        hidden, weight, bias, targets, temperature, ignore_index, with_entropy, with_argmax, chunk_size
    )
