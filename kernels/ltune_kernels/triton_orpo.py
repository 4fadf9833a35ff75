"""Triton kernel (c): the ORPO odds-ratio term, fused forward/backward, float32.

Hong et al. 2024 (arXiv 2403.07691). Per pair, with mean log-probs ``c`` (chosen) and ``r`` (rejected) clamped in
value to ``<= -1e-6`` (gradient passed straight through; see :mod:`ltune.kernels.torch_orpo`)::

    log_odds = (c - r) - (log1mexp(c) - log1mexp(r)),   loss = softplus(-log_odds)
    gz = g_log_odds - g_loss * sigmoid(-log_odds);       dc = gz / (-expm1(c)),   dr = -gz / (-expm1(r))

``expm1`` and ``log1p`` are written with plain ``tl`` ops (a degree-9 Taylor polynomial for ``|x| < 0.5``; Kahan's
``log1p``) because libdevice calls do not run under the Triton interpreter. The term is O(B) work; the kernel exists
so the whole objective stays on the device with one launch per direction.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .torch_orpo import LOGP_EPS

BLOCK = 256


def _empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Allocation of every kernel output; tests swap in a poisoning allocator to prove each element is written."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _expm1(x):
    # |x| < 0.5: Horner form of sum_{k=1..9} x^k / k! (truncation < 1e-9 relative); else exp(x) - 1 (no cancellation)
    p = 1.0 / 362880.0
    p = p * x + 1.0 / 40320.0
    p = p * x + 1.0 / 5040.0
    p = p * x + 1.0 / 720.0
    p = p * x + 1.0 / 120.0
    p = p * x + 1.0 / 24.0
    p = p * x + 1.0 / 6.0
    p = p * x + 0.5
    p = p * x + 1.0
    return tl.where(tl.abs(x) < 0.5, p * x, tl.exp(x) - 1.0)


@triton.jit
def _log1p(y):
    # Kahan: log1p(y) = y                          if 1 + y == 1
    #                 = log(1 + y) * y / ((1 + y) - 1)  otherwise
    w = 1.0 + y
    den = tl.where(w == 1.0, 1.0, w - 1.0)
    return tl.where(w == 1.0, y, tl.log(w) * (y / den))


@triton.jit
def _log1mexp(x):
    # log(1 - e^x) for x < 0: log(-expm1(x)) near 0, log1p(-e^x) far from it
    return tl.where(x > -0.6931471805599453, tl.log(-_expm1(x)), _log1p(-tl.exp(x)))


@triton.jit
def _orpo_fwd_kernel(c_ptr, r_ptr, loss_ptr, odds_ptr, B, max_logp, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < B
    c = tl.minimum(tl.load(c_ptr + offs, mask=mask, other=-1.0).to(tl.float32), max_logp)
    r = tl.minimum(tl.load(r_ptr + offs, mask=mask, other=-1.0).to(tl.float32), max_logp)
    z = (c - r) - (_log1mexp(c) - _log1mexp(r))
    loss = tl.maximum(-z, 0.0) + _log1p(tl.exp(-tl.abs(z)))  # softplus(-z)
    tl.store(loss_ptr + offs, loss, mask=mask)
    tl.store(odds_ptr + offs, z, mask=mask)


@triton.jit
def _orpo_bwd_kernel(c_ptr, r_ptr, odds_ptr, g_loss_ptr, g_odds_ptr, dc_ptr, dr_ptr, B, max_logp, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < B
    c = tl.minimum(tl.load(c_ptr + offs, mask=mask, other=-1.0).to(tl.float32), max_logp)
    r = tl.minimum(tl.load(r_ptr + offs, mask=mask, other=-1.0).to(tl.float32), max_logp)
    z = tl.load(odds_ptr + offs, mask=mask, other=0.0)
    g_loss = tl.load(g_loss_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g_odds = tl.load(g_odds_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig_neg = 1.0 / (1.0 + tl.exp(z))  # sigmoid(-z); exp overflow -> 0, the right limit
    gz = g_odds - g_loss * sig_neg
    tl.store(dc_ptr + offs, (gz / -_expm1(c)).to(dc_ptr.dtype.element_ty), mask=mask)
    tl.store(dr_ptr + offs, (-gz / -_expm1(r)).to(dr_ptr.dtype.element_ty), mask=mask)


class OddsRatioTriton(torch.autograd.Function):
    """``(mean_logp_chosen [B], mean_logp_rejected [B]) -> (loss [B] fp32, log_odds [B] fp32)``."""

    @staticmethod
    def forward(ctx, chosen: Tensor, rejected: Tensor):
        c, r = chosen.contiguous().view(-1), rejected.contiguous().view(-1)
        n = c.numel()
        loss = _empty(n, torch.float32, c.device)
        odds = _empty(n, torch.float32, c.device)
        if n:
            _orpo_fwd_kernel[(triton.cdiv(n, BLOCK),)](c, r, loss, odds, n, -LOGP_EPS, BLOCK=BLOCK)
        ctx.save_for_backward(c, r, odds)
        ctx.shape = chosen.shape
        return loss.view(chosen.shape), odds.view(chosen.shape)

    @staticmethod
    def backward(ctx, grad_loss: Tensor | None, grad_odds: Tensor | None):
        c, r, odds = ctx.saved_tensors
        n = c.numel()
        g_loss = torch.zeros_like(odds) if grad_loss is None else grad_loss.contiguous().view(-1)
        g_odds = torch.zeros_like(odds) if grad_odds is None else grad_odds.contiguous().view(-1)
        dc = _empty(n, c.dtype, c.device)
        dr = _empty(n, r.dtype, r.device)
        if n:
            _orpo_bwd_kernel[(triton.cdiv(n, BLOCK),)](c, r, odds, g_loss, g_odds, dc, dr, n, -LOGP_EPS, BLOCK=BLOCK)
        return dc.view(ctx.shape), dr.view(ctx.shape)


def odds_ratio_loss_triton(mean_logp_chosen: Tensor, mean_logp_rejected: Tensor) -> tuple[Tensor, Tensor]:
    """Triton path of :func:`ltune.kernels.odds_ratio_loss`."""
    return OddsRatioTriton.apply(mean_logp_chosen, mean_logp_rejected)
