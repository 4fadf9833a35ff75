"""Public kernel API and the dispatch between the Triton kernels and the exact torch path.

Every objective reaches the kernels through these functions. ``impl`` chooses the implementation:

* ``None`` -> the environment variable ``LTUNE_KERNELS`` (``auto`` | ``torch`` | ``triton``), default ``auto``;
* ``"auto"`` -> Triton when the tensors are CUDA tensors and ``triton`` imports, else torch;
* ``"torch"`` -> the exact chunked torch path (any device);
* ``"triton"`` -> the Triton kernels; raises ``RuntimeError`` when ``triton`` is not importable, or when the tensors
  are not on CUDA and the Triton interpreter (``TRITON_INTERPRET=1``) is off.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import NamedTuple

import torch
from torch import Tensor

from .torch_linear import linear_token_logprobs_torch
from .torch_logprobs import token_logprobs_torch
from .torch_orpo import odds_ratio_loss_torch

IGNORE_INDEX = -100  # the label of tokens that are not scored (prompt, padding): the one definition in ltune

IMPLS = ("auto", "torch", "triton")
ENV_VAR = "LTUNE_KERNELS"


class LogProbs(NamedTuple):
    """Per-token results, all of shape ``targets.shape``.

    Attributes:
        logprobs: float32 ``log p(target)``; exactly 0.0 where ``target == ignore_index``.
        entropy: float32 entropy of ``softmax(logits / T)`` (nats), detached, 0 at ignored; ``None`` unless requested.
        argmax_hit: bool ``argmax(logits) == target``, ``False`` at ignored; ``None`` unless requested.
    """

    logprobs: Tensor
    entropy: Tensor | None
    argmax_hit: Tensor | None


@functools.cache
def triton_available() -> bool:
    """Whether ``triton`` is installed and imports (imported only when a Triton path is being considered)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install means "unavailable", with the torch path as fallback
        return False
    return True


def resolve_impl(impl: str | None, *tensors: Tensor) -> str:
    """Resolve ``impl`` (or ``$LTUNE_KERNELS``) to ``"torch"`` or ``"triton"`` for the given tensors.

    Args:
        impl: ``None``, ``"auto"``, ``"torch"`` or ``"triton"``.
        *tensors: the inputs; ``auto`` picks Triton only when all of them are CUDA tensors.

    Returns:
        ``"torch"`` or ``"triton"``.

    Raises:
        ValueError: an unknown ``impl`` or ``$LTUNE_KERNELS`` value.
        RuntimeError: ``"triton"`` was asked for but cannot run here.
    """
    choice = impl if impl is not None else os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in IMPLS:
        source = "impl" if impl is not None else f"${ENV_VAR}"
        raise ValueError(f"{source}={choice!r} is not one of {IMPLS}")
    on_cuda = all(t.is_cuda for t in tensors)
    if choice == "auto":
        return "triton" if on_cuda and triton_available() else "torch"
    if choice == "triton":
        if not triton_available():
            raise RuntimeError(
                "ltune.kernels: impl='triton' was requested but `triton` is not installed "
                "(pip install 'ltune[triton]', or use impl='torch')"
            )
        if not on_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise RuntimeError(
                "ltune.kernels: impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before triton is "
                "imported, for testing); use impl='torch' on CPU"
            )
    return choice


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _pack(logp: Tensor, entropy: Tensor, hit: Tensor, shape: torch.Size, with_entropy: bool, with_argmax: bool):
    return LogProbs(
        logp.view(shape),
        entropy.view(shape) if with_entropy else None,
        hit.view(shape) if with_argmax else None,
    )


def token_logprobs(
    logits: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    with_entropy: bool = False,
    with_argmax: bool = False,
    impl: str | None = None,
) -> LogProbs:
    """Per-token log-probs of ``targets`` under ``softmax(logits / T)``, in float32.

    ``log p(t) = logits_t / T - logsumexp_v(logits_v / T)``; one online log-sum-exp pass per row. The caller's logits
    are never modified; the backward applies any upstream gradient ``g``: ``dlogits = g (onehot - softmax) / T``.

    Args:
        logits: ``[..., V]`` logits, any float dtype.
        targets: ``[...]`` long token ids; ``ignore_index`` positions are skipped.
        temperature: ``T > 0``.
        ignore_index: target value meaning "no token here".
        with_entropy: also return the per-token entropy (detached).
        with_argmax: also return whether ``argmax(logits) == target``.
        impl: ``None``/``"auto"``/``"torch"``/``"triton"`` (see module docstring).

    Returns:
        :class:`LogProbs` with float32 ``logprobs`` of shape ``targets.shape``.
    """
    _check_temperature(temperature)
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    shape = targets.shape
    logits2d, targets1d = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long()
    if resolve_impl(impl, logits, targets) == "triton":
        from .triton_logprobs import token_logprobs_triton as fn
    else:
        fn = token_logprobs_torch
    out = fn(
        logits2d,
        targets1d,
        temperature=temperature,
        ignore_index=ignore_index,
        with_entropy=with_entropy,
        with_argmax=with_argmax,
    )
    return _pack(*out, shape, with_entropy, with_argmax)


def linear_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    with_entropy: bool = False,
    with_argmax: bool = False,
    chunk_size: int = 4096,
    impl: str | None = None,
) -> LogProbs:
    """Per-token log-probs of ``hidden @ weight.T + bias`` without materialising the ``[tokens, V]`` logits.

    ``log p(t) = (h . W[t] + b[t]) / T - logsumexp_v((h . W[v] + b[v]) / T)``, computed in float32. Ignored tokens are
    compacted away; the forward saves ``hidden``, ``weight``, ``bias``, ``targets`` and one log-sum-exp per valid
    token; the backward recomputes the logits chunk by chunk and applies an arbitrary per-token upstream gradient, so
    ORPO, GRPO and any other reduction get exact gradients for ``hidden``, ``weight`` and ``bias``.

    Args:
        hidden: ``[..., H]`` final hidden states (may come from a LoRA model).
        weight: ``[V, H]`` output embedding / lm_head weight (may be tied or frozen).
        targets: ``[...]`` long token ids.
        bias: optional ``[V]`` output bias.
        temperature: ``T > 0``.
        ignore_index: target value meaning "no token here".
        with_entropy: also return the per-token entropy (detached).
        with_argmax: also return whether ``argmax(logits) == target``.
        chunk_size: tokens per chunk (the torch path holds ``chunk_size x V`` float32 temporaries).
        impl: ``None``/``"auto"``/``"torch"``/``"triton"`` (see module docstring).

    Returns:
        :class:`LogProbs` with float32 ``logprobs`` of shape ``targets.shape``; gradients come back in input dtypes.
    """
    _check_temperature(temperature)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight {tuple(weight.shape)} must be [V, H] with H = {hidden.shape[-1]}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias {tuple(bias.shape)} must be [V] with V = {weight.shape[0]}")
    shape = targets.shape
    hidden2d, targets1d = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1).long()
    tensors = (hidden, weight, targets) if bias is None else (hidden, weight, targets, bias)
    if resolve_impl(impl, *tensors) == "triton":
        from .triton_linear import linear_token_logprobs_triton as fn
    else:
        fn = linear_token_logprobs_torch
    out = fn(
        hidden2d,
        weight,
        targets1d,
        bias=bias,
        temperature=temperature,
        ignore_index=ignore_index,
        with_entropy=with_entropy,
        with_argmax=with_argmax,
        chunk_size=chunk_size,
    )
    return _pack(*out, shape, with_entropy, with_argmax)


def odds_ratio_loss(
    mean_logp_chosen: Tensor, mean_logp_rejected: Tensor, *, impl: str | None = None
) -> tuple[Tensor, Tensor]:
    """ORPO odds-ratio term per pair (Hong et al. 2024, arXiv 2403.07691), fused forward/backward in float32.

    ``log_odds = (c - r) - (log(1 - e^c) - log(1 - e^r))`` and ``loss = -logsigmoid(log_odds)``, with a stable
    ``log(1 - e^x)`` (``log(-expm1(x))`` near 0). Inputs are clamped in value to ``<= -1e-6`` (gradient passed
    straight through, evaluated at the clamped point), so a mean log-prob of 0 gives finite outputs and gradients.
    The ORPO objective is ``nll + lambda * loss.mean()``; ``lambda`` and the mean belong to the caller.

    Args:
        mean_logp_chosen: ``[B]`` length-averaged log-prob of each chosen completion.
        mean_logp_rejected: ``[B]`` the same for each rejected completion.
        impl: ``None``/``"auto"``/``"torch"``/``"triton"`` (see module docstring).

    Returns:
        ``(loss_per_pair [B], log_odds [B])``, float32, both differentiable w.r.t. both inputs.
    """
    if mean_logp_chosen.shape != mean_logp_rejected.shape:
        raise ValueError(f"chosen {tuple(mean_logp_chosen.shape)} != rejected {tuple(mean_logp_rejected.shape)}")
    if resolve_impl(impl, mean_logp_chosen, mean_logp_rejected) == "triton":
        from .triton_orpo import odds_ratio_loss_triton as fn
    else:
        fn = odds_ratio_loss_torch
    return fn(mean_logp_chosen, mean_logp_rejected)
