"""Exact torch path of the ORPO odds-ratio term (kernel (c)), fused forward/backward in closed form.

Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model" (arXiv 2403.07691). For a
pair with length-averaged log-probs ``c`` (chosen) and ``r`` (rejected), both ``< 0``::

    log_odds = (c - r) - (log1mexp(c) - log1mexp(r)),   log1mexp(x) = log(1 - e^x)
    loss     = -logsigmoid(log_odds) = softplus(-log_odds)

``log1mexp`` is evaluated stably: ``log(-expm1(x))`` for ``x > -ln 2`` and ``log1p(-exp(x))`` otherwise. The
gradients are exact closed forms (``d log_odds / dc = 1 / (1 - e^c) = -1 / expm1(c)``)::

    gz = g_log_odds - g_loss * sigmoid(-log_odds)
    dc = gz / (-expm1(c)),   dr = -gz / (-expm1(r))

Stability near ``x -> 0^-``: a mean log-prob of exactly 0 (or a tiny positive value from rounding) would make
``log1mexp`` ``-inf``. Inputs are therefore clamped to ``x <= -LOGP_EPS`` (1e-6) *in value only*: the gradient is
the closed form evaluated at the clamped point and passed straight through (no dead zone), so every output and
gradient is finite. ``log_odds`` is then bounded by about ``+-14.9``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import reference_log1mexp as log1mexp

LOGP_EPS = 1e-6


class OddsRatioTorch(torch.autograd.Function):
    """``(mean_logp_chosen [B], mean_logp_rejected [B]) -> (loss [B] fp32, log_odds [B] fp32)``."""

    @staticmethod
    def forward(ctx, chosen: Tensor, rejected: Tensor) -> tuple[Tensor, Tensor]:
        c = chosen.float().clamp(max=-LOGP_EPS)
        r = rejected.float().clamp(max=-LOGP_EPS)
        log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
        loss = torch.nn.functional.softplus(-log_odds)
        ctx.save_for_backward(c, r, log_odds)
        ctx.dtypes = (chosen.dtype, rejected.dtype)
        return loss, log_odds

    @staticmethod
    def backward(ctx, grad_loss: Tensor | None, grad_log_odds: Tensor | None):
        c, r, log_odds = ctx.saved_tensors
        gz = torch.zeros_like(log_odds)
        if grad_log_odds is not None:
            gz = gz + grad_log_odds.float()
        if grad_loss is not None:
            gz = gz - grad_loss.float() * torch.sigmoid(-log_odds)
        grad_c = gz / (-torch.expm1(c))
        grad_r = -gz / (-torch.expm1(r))
        return grad_c.to(ctx.dtypes[0]), grad_r.to(ctx.dtypes[1])


def odds_ratio_loss_torch(mean_logp_chosen: Tensor, mean_logp_rejected: Tensor) -> tuple[Tensor, Tensor]:
    """Torch path of :func:`ltune.kernels.odds_ratio_loss`."""
    return OddsRatioTorch.apply(mean_logp_chosen, mean_logp_rejected)
