"""Per-token log-prob kernels: Triton on CUDA, an exact chunked torch path elsewhere.

Public API (see :mod:`ltune.kernels.dispatch`): :func:`token_logprobs`, :func:`linear_token_logprobs`,
:func:`odds_ratio_loss` and :class:`LogProbs`. Pure-torch definitions live in :mod:`ltune.kernels.reference`.
Importing this package never imports ``triton``.
"""

from .dispatch import (
    IGNORE_INDEX,
    LogProbs,
    linear_token_logprobs,
    odds_ratio_loss,
    resolve_impl,
    token_logprobs,
    triton_available,
)

__all__ = [
    "IGNORE_INDEX",
    "LogProbs",
    "linear_token_logprobs",
    "odds_ratio_loss",
    "resolve_impl",
    "token_logprobs",
    "triton_available",
]
