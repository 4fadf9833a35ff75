"""Triton kernel (a): per-token log-probs (and entropy, argmax hit) from logits you already have.

One program per row, one pass over the vocabulary with an online log-sum-exp in float32 (``z = logits / T``)::

    m' = max(m, max_blk z);  s' = s e^(m - m') + sum_blk e^(z - m');  u' = u e^(m - m') + sum_blk z e^(z - m')
    LSE = m + log s;  logp = z_t - LSE;  H = LSE - u / s

so the forward reads the logits exactly once and writes ``4 N`` bytes of log-probs plus the saved LSE. The backward
reads the logits once more and writes ``dlogits = g (onehot - e^(z - LSE)) / T`` in the logits' dtype, for an
arbitrary per-row upstream gradient ``g``. Rows whose target is ``ignore_index`` read nothing and get exact zeros.
Every output element is written by the kernels (no pre-zeroed buffers), and the caller's logits are never written.

This module imports ``triton``; reach it through :func:`ltune.kernels.token_logprobs`.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_BLOCK_V = 8192


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Allocation of every kernel output; tests swap in a poisoning allocator to prove each element is written."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _logprobs_fwd_kernel(
    logits_ptr,
    stride_row,
    targets_ptr,
    logp_ptr,
    lse_ptr,
    entropy_ptr,
    hit_ptr,
    V,
    inv_temperature,
    ignore_index,
    WITH_ENTROPY: tl.constexpr,
    WITH_ARGMAX: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    tgt = tl.load(targets_ptr + row)
    valid = tgt != ignore_index
    limit = tl.where(valid, V, 0)  # ignored rows read nothing
    base = logits_ptr + row * stride_row
    m = float("-inf")
    s = 0.0
    u = 0.0
    best = float("-inf")
    best_idx = 0
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = cols < limit
        x = tl.load(base + cols, mask=mask, other=float("-inf")).to(tl.float32)
        if WITH_ARGMAX:
            blk_best = tl.max(x, 0)
            blk_idx = tl.min(tl.where(x == blk_best, cols, V), 0)  # first index of the block maximum
            better = blk_best > best  # strict: earlier blocks win ties, like torch.argmax
            best_idx = tl.where(better, blk_idx, best_idx)
            best = tl.where(better, blk_best, best)
        z = x * inv_temperature
        m_new = tl.maximum(m, tl.max(z, 0))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # all masked so far: avoid -inf - -inf
        scale = tl.exp(m - m_ref)
        e = tl.exp(z - m_ref)
        s = s * scale + tl.sum(e, 0)
        if WITH_ENTROPY:
            u = u * scale + tl.sum(e * tl.where(mask, z, 0.0), 0)  # masked: e == 0, z == -inf
        m = m_new
    s_safe = tl.where(valid, s, 1.0)
    lse = tl.where(valid, m + tl.log(s_safe), 0.0)
    safe_tgt = tl.where(valid, tgt, 0)
    z_t = tl.load(base + safe_tgt, mask=valid, other=0.0).to(tl.float32) * inv_temperature
    tl.store(logp_ptr + row, tl.where(valid, z_t - lse, 0.0))
    tl.store(lse_ptr + row, lse)
    if WITH_ENTROPY:
        tl.store(entropy_ptr + row, tl.where(valid, lse - u / s_safe, 0.0))
    if WITH_ARGMAX:
        tl.store(hit_ptr + row, (valid & (best_idx == tgt)).to(tl.int8))


@triton.jit
def _logprobs_bwd_kernel(
    logits_ptr,
    stride_row,
    dlogits_ptr,
    stride_drow,
    targets_ptr,
    grad_ptr,
    lse_ptr,
    V,
    inv_temperature,
    ignore_index,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    tgt = tl.load(targets_ptr + row)
    valid = tgt != ignore_index
    g = tl.where(valid, tl.load(grad_ptr + row).to(tl.float32), 0.0) * inv_temperature
    lse = tl.load(lse_ptr + row)
    limit = tl.where(valid, V, 0)
    base = logits_ptr + row * stride_row
    dbase = dlogits_ptr + row * stride_drow
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        in_vocab = cols < V
        x = tl.load(base + cols, mask=cols < limit, other=0.0).to(tl.float32)
        gp = g * tl.exp(x * inv_temperature - lse)
        d = tl.where(cols == tgt, g - gp, -gp)
        tl.store(dbase + cols, d.to(dlogits_ptr.dtype.element_ty), mask=in_vocab)


def _launch_config(vocab: int, block_v: int | None) -> tuple[int, int]:
    block = block_v or min(MAX_BLOCK_V, triton.next_power_of_2(vocab))
    warps = 1 if os.environ.get("TRITON_INTERPRET") == "1" else max(1, min(16, block // 512))
    return block, warps


def logprobs_forward(
    logits: Tensor,
    targets: Tensor,
    temperature: float,
    ignore_index: int,
    with_entropy: bool,
    with_argmax: bool,
    block_v: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Launch the forward kernel on ``logits [N, V]`` (unit column stride), ``targets [N]``.

    Returns:
        ``(logp [N] fp32, lse [N] fp32, entropy [N]|[0] fp32, hit [N]|[0] bool)``.
    """
    n, vocab = logits.shape
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    dev = logits.device
    logp = _empty(n, torch.float32, dev)
    lse = _empty(n, torch.float32, dev)
    entropy = _empty(n if with_entropy else 0, torch.float32, dev)
    hit = _empty(n if with_argmax else 0, torch.int8, dev)
    if n:
        block, warps = _launch_config(vocab, block_v)
        _logprobs_fwd_kernel[(n,)](
            logits,
            logits.stride(0),
            targets,
            logp,
            lse,
            entropy if with_entropy else logp,
            hit if with_argmax else logp,
            vocab,
            1.0 / temperature,
            ignore_index,
            WITH_ENTROPY=with_entropy,
            WITH_ARGMAX=with_argmax,
            BLOCK_V=block,
            num_warps=warps,
        )
    return logp, lse, entropy, hit.bool()


def logprobs_backward(
    logits: Tensor,
    targets: Tensor,
    lse: Tensor,
    grad_logp: Tensor,
    temperature: float,
    ignore_index: int,
    out: Tensor | None = None,
    block_v: int | None = None,
) -> Tensor:
    """``dlogits [N, V] = g (onehot - softmax(logits / T)) / T``, written into ``out`` (new, logits' dtype, if None).

    ``out`` may be ``logits`` itself when the caller owns that buffer (the chunked linear path does): each element is
    read before it is written by the same program.
    """
    n, vocab = logits.shape
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    if out is None:
        out = _empty(logits.shape, logits.dtype, logits.device)
    if n:
        block, warps = _launch_config(vocab, block_v)
        _logprobs_bwd_kernel[(n,)](
            logits,
            logits.stride(0),
            out,
            out.stride(0),
            targets,
            grad_logp.contiguous(),
            lse,
            vocab,
            1.0 / temperature,
            ignore_index,
            BLOCK_V=block,
            num_warps=warps,
        )
    return out


class TokenLogProbsTriton(torch.autograd.Function):
    """Autograd Function over the two kernels; ``logits [N, V]``, ``targets [N]`` as in the torch path."""

    @staticmethod
    def forward(ctx, logits, targets, temperature, ignore_index, with_entropy, with_argmax, block_v):
        logp, lse, entropy, hit = logprobs_forward(
            logits, targets, temperature, ignore_index, with_entropy, with_argmax, block_v
        )
        ctx.save_for_backward(logits, targets, lse)
        ctx.args = (temperature, ignore_index, block_v)
        ctx.mark_non_differentiable(entropy, hit)
        return logp, entropy, hit

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy, _grad_hit):
        if grad_logp is None or not ctx.needs_input_grad[0]:
            return (None,) * 7
        logits, targets, lse = ctx.saved_tensors
        temperature, ignore_index, block_v = ctx.args
        grad = logprobs_backward(logits, targets, lse, grad_logp, temperature, ignore_index, block_v=block_v)
        return grad, None, None, None, None, None, None


def token_logprobs_triton(
    logits: Tensor,
    targets: Tensor,
    *,
    temperature: float,
    ignore_index: int,
    with_entropy: bool,
    with_argmax: bool,
    block_v: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Triton path of :func:`ltune.kernels.token_logprobs` on flattened ``logits [N, V]``, ``targets [N]``.

    ``block_v`` overrides the vocabulary block (tests use a small one to exercise several blocks and a ragged tail).
    """
    return TokenLogProbsTriton.apply(
        logits, targets.contiguous(), temperature, ignore_index, with_entropy, with_argmax, block_v
    )
