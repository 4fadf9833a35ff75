"""Triton path of kernel (b): fused linear + per-token log-probs, chunked over tokens with kernel (a) inside.

Valid tokens (``target != ignore_index``) are compacted first; ignored tokens cost nothing. For each chunk of ``c``
valid tokens::

    forward:   Z = (h W^T + b) in float32 [c, V]  ->  kernel (a) forward: logp, LSE (saved), entropy, argmax hit
    backward:  Z recomputed                       ->  kernel (a) backward in place: D = g (onehot - e^(Z/T - LSE)) / T
               grad_h = D W;   grad_W += D^T h (float32 accumulator);   grad_b += sum_rows D

The matmuls are cuBLAS with float32 outputs (``torch.mm(..., out_dtype=torch.float32)`` for bf16/fp16 on CUDA); on
CUDA ``D`` is rounded to the weight dtype for the two gradient GEMMs (as Liger and Cut Cross-Entropy do), while the
accumulators stay float32. Where mixed-precision matmuls are unavailable (CPU, the Triton interpreter) one float32
copy of ``W`` is made per call. Extra memory: one ``[c, V]`` float32 chunk (plus its low-precision copy in the
backward), O(tokens) saved state and the ``[V, H]`` float32 gradient accumulator when ``W`` needs a gradient.

This module imports ``triton``; reach it through :func:`ltune.kernels.linear_token_logprobs`.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .triton_logprobs import logprobs_backward, logprobs_forward

_LOW_PRECISION = (torch.bfloat16, torch.float16)
_DW_VOCAB_SLAB = 16384  # rows of grad_W updated per addmm, bounding the float32 temporary


@functools.cache
def _cuda_out_dtype_mm() -> bool:
    """Whether ``torch.mm(bf16, bf16, out_dtype=torch.float32)`` works on this CUDA build."""
    try:
        a = torch.ones(16, 16, dtype=torch.bfloat16, device="cuda")
        return bool(torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32)
    except (RuntimeError, TypeError):
        return False


class _Matmuls:
    """The three GEMMs of the chunk loop, in float32 precision, for one (weight, bias) pair."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        self.weight = weight
        self.mixed = weight.is_cuda and weight.dtype in _LOW_PRECISION and _cuda_out_dtype_mm()
        self.weight_f32 = None if self.mixed else weight.float()
        self.bias_f32 = None if bias is None else bias.float()

    def logits(self, h: Tensor) -> Tensor:
        """``h [c, H] -> h W^T + b`` as float32 ``[c, V]``."""
        if self.mixed:
            z = torch.mm(h.to(self.weight.dtype), self.weight.T, out_dtype=torch.float32)
        else:
            z = h.float() @ self.weight_f32.T
        if self.bias_f32 is not None:
            z.add_(self.bias_f32)
        return z

    def grad_hidden(self, d: Tensor) -> Tensor:
        """``d [c, V] -> d W`` ``[c, H]`` (float32 or the weight dtype)."""
        if self.mixed:
            return torch.mm(d.to(self.weight.dtype), self.weight, out_dtype=torch.float32)
        return d @ self.weight_f32

    def accumulate_grad_weight(self, grad_w: Tensor, d: Tensor, h: Tensor) -> None:
        """``grad_w [V, H] += d^T h`` with a float32 accumulator."""
        if not self.mixed:
            grad_w.addmm_(d.T, h.float())
            return
        d_lp, h_lp = d.to(self.weight.dtype), h.to(self.weight.dtype)
        for start in range(0, grad_w.shape[0], _DW_VOCAB_SLAB):
            rows = slice(start, start + _DW_VOCAB_SLAB)
            grad_w[rows] = torch.addmm(grad_w[rows], d_lp[:, rows].T, h_lp, out_dtype=torch.float32)


class LinearLogProbsTriton(torch.autograd.Function):
    """Autograd Function; same inputs and outputs as :class:`ltune.kernels.torch_linear.LinearLogProbsTorch`."""

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
        block_v: int | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n, dev = hidden.shape[0], hidden.device
        mm = _Matmuls(weight, bias)
        idx = (targets != ignore_index).nonzero().squeeze(1)
        logp = torch.zeros(n, dtype=torch.float32, device=dev)
        entropy = torch.zeros(n if with_entropy else 0, dtype=torch.float32, device=dev)
        hit = torch.zeros(n if with_argmax else 0, dtype=torch.bool, device=dev)
        lse = torch.empty(idx.numel(), dtype=torch.float32, device=dev)
        for start in range(0, idx.numel(), chunk_size):
            rows = idx[start : start + chunk_size]
            tgt = targets[rows]
            z = mm.logits(hidden.index_select(0, rows))
            lp_c, lse_c, ent_c, hit_c = logprobs_forward(
                z, tgt, temperature, ignore_index, with_entropy, with_argmax, block_v
            )
            del z
            logp[rows] = lp_c
            lse[start : start + chunk_size] = lse_c
            if with_entropy:
                entropy[rows] = ent_c
            if with_argmax:
                hit[rows] = hit_c
        ctx.save_for_backward(hidden, weight, bias, targets, lse, idx)
        ctx.args = (temperature, ignore_index, chunk_size, block_v)
        ctx.mark_non_differentiable(entropy, hit)
        return logp, entropy, hit

    @staticmethod
    def backward(ctx, grad_logp: Tensor | None, _grad_entropy: Tensor | None, _grad_hit: Tensor | None):
        hidden, weight, bias, targets, lse, idx = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        none_tail = (None,) * 7
        if grad_logp is None or not (need_h or need_w or need_b):
            return (None, None, None, *none_tail)
        temperature, ignore_index, chunk_size, block_v = ctx.args
        mm = _Matmuls(weight, bias)
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for start in range(0, idx.numel(), chunk_size):
            rows = idx[start : start + chunk_size]
            h = hidden.index_select(0, rows)
            z = mm.logits(h)
            d = logprobs_backward(
                z,
                targets[rows],
                lse[start : start + chunk_size],
                grad_logp[rows],
                temperature,
                ignore_index,
                z,
                block_v,
            )
            if grad_h is not None:
                grad_h[rows] = mm.grad_hidden(d).to(grad_h.dtype)
            if grad_w is not None:
                mm.accumulate_grad_weight(grad_w, d, h)
            if grad_b is not None:
                grad_b += d.sum(0)
            del z, d
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        grad_b = None if grad_b is None else grad_b.to(bias.dtype)
        return (grad_h, grad_w, grad_b, *none_tail)


def linear_token_logprobs_triton(
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
    block_v: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Triton path of :func:`ltune.kernels.linear_token_logprobs` on flattened ``hidden [N, H]``, ``targets [N]``."""
    return LinearLogProbsTriton.apply(
        hidden, weight, bias, targets, temperature, ignore_index, with_entropy, with_argmax, chunk_size, block_v
    )
