"""The loss types of TRL 1.16's ``DPOTrainer`` (``loss_type``), one pure function each, and their weighted sum.

Notation (each function says which of these it takes). For a batch of B preference pairs:

- ``chosen_logratios`` ``rho_w = log pi(y_w|x) - log pi_ref(y_w|x)``, ``[B]``: the chosen response's summed log-prob
  under the policy minus the reference's; ``rejected_logratios`` ``rho_l`` likewise; ``d = rho_w - rho_l``.
- ``beta``: TRL's ``beta`` (default 0.1); ``eps``: TRL's ``label_smoothing``; ``n_w``, ``n_l``: response token counts.

Each returns the ``[B]`` per-pair losses (``sft``: the scalar token mean); :func:`weighted_dpo_loss` averages each over
the pairs and sums them with weights, ``L = sum_k w_k * mean_B(L_k)``, as TRL combines a list of loss types (MPO,
arXiv:2411.10442, uses ``["sigmoid", "bco_pair", "sft"]`` with ``[0.8, 0.2, 1.0]``). Only TRL's default
``f_divergence_type="reverse_kl"`` is covered, without ``ld_alpha`` or ``use_weighting``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

DPOLossType = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]  # fmt: skip
DPO_LOSS_TYPES: tuple[str, ...] = get_args(DPOLossType)
LABEL_SMOOTHED = ("sigmoid", "exo_pair", "robust", "aot", "aot_unpaired")  # the types that read label_smoothing


def _smoothed(h: Tensor, eps: float) -> Tensor:
    """``-(1 - eps) log sigmoid(h) - eps log sigmoid(-h)``: a logistic loss whose label is flipped with probability
    eps."""
    return -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h)


def sigmoid_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float, eps: float = 0.0) -> Tensor:
    """DPO (Rafailov et al., 2023, arXiv:2305.18290, eq. 7): ``-log sigmoid(beta d)``.

    ``eps > 0`` is conservative DPO (cDPO, Mitchell 2023),
    ``-(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d)``,
    the smoothed form of TRL's CPO ``sigmoid``; TRL 1.16's DPO ``sigmoid`` has no smoothing (``eps = 0`` is it).
    Shapes: ``[B]`` in, ``[B]`` out.
    """
    return _smoothed(beta * (chosen_logratios - rejected_logratios), eps)


def hinge_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float) -> Tensor:
    """SLiC's hinge on the log-ratios as RSO uses it (Liu et al., 2023, arXiv:2309.06657; SLiC-HF, arXiv:2305.10425):
    ``relu(1 - beta d)``, beta the reciprocal of the margin. Shapes: ``[B]`` in, ``[B]`` out."""
    return torch.relu(1 - beta * (chosen_logratios - rejected_logratios))


def ipo_loss(
    chosen_logratios: Tensor, rejected_logratios: Tensor, chosen_tokens: Tensor, rejected_tokens: Tensor, beta: float
) -> Tensor:
    """IPO (Azar et al., 2023, arXiv:2310.12036, eq. 17) on per-token log-ratios, as TRL normalises it:
    ``(rho_w / n_w - rho_l / n_l - 1 / (2 beta))^2``, beta the paper's tau. Shapes: ``[B]`` log-ratios and response
    token counts n_w, n_l (clamped to >= 1) in, ``[B]`` out."""
    d = chosen_logratios / chosen_tokens.clamp_min(1) - rejected_logratios / rejected_tokens.clamp_min(1)
    return (d - 1 / (2 * beta)) ** 2


def sigmoid_norm_loss(
    chosen_logratios: Tensor, rejected_logratios: Tensor, chosen_tokens: Tensor, rejected_tokens: Tensor, beta: float
) -> Tensor:
    """Length-normalised DPO (Tulu 3, Lambert et al., 2024, arXiv:2411.15124, eq. 6):
    ``-log sigmoid(beta (rho_w / n_w - rho_l / n_l))``. Shapes as :func:`ipo_loss` (counts clamped to >= 1)."""
    d = chosen_logratios / chosen_tokens.clamp_min(1) - rejected_logratios / rejected_tokens.clamp_min(1)
    return -F.logsigmoid(beta * d)


def exo_pair_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float, eps: float) -> Tensor:
    """Pairwise EXO (Ji et al., 2024, arXiv:2402.00856, eq. 16): the KL from ``q = softmax(beta rho)`` over the pair to
    the smoothed labels ``(1 - eps, eps)``,
    ``sigmoid(beta d) (log sigmoid(beta d) - log(1 - eps)) + sigmoid(-beta d) (log sigmoid(-beta d) - log eps)``.
    Needs ``eps > 0`` (the paper uses 1e-3). Shapes: ``[B]`` in, ``[B]`` out."""
    h = beta * (chosen_logratios - rejected_logratios)
    win = torch.sigmoid(h) * (F.logsigmoid(h) - math.log1p(-eps))
    return win + torch.sigmoid(-h) * (F.logsigmoid(-h) - math.log(eps))


def robust_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float, eps: float) -> Tensor:
    """Robust DPO (Chowdhury et al., 2024, arXiv:2403.00409): unbiased under labels flipped with probability eps,
    ``(-(1 - eps) log sigmoid(beta d) + eps log sigmoid(-beta d)) / (1 - 2 eps)``. Shapes: ``[B]`` in, ``[B]`` out."""
    h = beta * (chosen_logratios - rejected_logratios)
    return (-(1 - eps) * F.logsigmoid(h) + eps * F.logsigmoid(-h)) / (1 - 2 * eps)


def discopop_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float, tau: float = 0.05) -> Tensor:
    """DiscoPOP, the log-ratio modulated loss (Lu et al., 2024, arXiv:2406.08414, eq. 5): with ``z = beta d`` and
    ``m = sigmoid(z / tau)``, ``(1 - m) (-log sigmoid(z)) + m exp(-z)``; tau is TRL's ``discopop_tau`` (the paper's
    0.05). Shapes: ``[B]`` in, ``[B]`` out."""
    z = beta * (chosen_logratios - rejected_logratios)
    m = torch.sigmoid(z / tau)
    return -F.logsigmoid(z) * (1 - m) + torch.exp(-z) * m


def nca_pair_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float) -> Tensor:
    """NCA, pairwise (Chen et al., 2024, arXiv:2402.05369): absolute likelihoods, not their difference,
    ``-log sigmoid(beta rho_w) - 1/2 log sigmoid(-beta rho_w) - 1/2 log sigmoid(-beta rho_l)``.
    Shapes: ``[B]`` in, ``[B]`` out."""
    w, lo = beta * chosen_logratios, beta * rejected_logratios
    return -F.logsigmoid(w) - 0.5 * F.logsigmoid(-w) - 0.5 * F.logsigmoid(-lo)


def bco_pair_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float) -> Tensor:
    """BCO on pairs (Jung et al., 2024, arXiv:2404.04656): a binary classifier with logit ``beta rho`` (chosen 1,
    rejected 0), ``-log sigmoid(beta rho_w) - log sigmoid(-beta rho_l)``; TRL uses no reward shift here.
    Shapes: ``[B]`` in, ``[B]`` out."""
    return -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-beta * rejected_logratios)


def sppo_hard_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float) -> Tensor:
    """SPPO with hard win probabilities 1 and 0 (Wu et al., 2024, arXiv:2405.00675, eq. 4.7):
    ``(rho_w - 1 / (2 beta))^2 + (rho_l + 1 / (2 beta))^2``. Shapes: ``[B]`` in, ``[B]`` out."""
    return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2


def apo_zero_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float) -> Tensor:
    """APO-zero (D'Oosterlinck et al., 2024, arXiv:2408.06266, eq. 7): raise the chosen, lower the rejected,
    ``1 - sigmoid(beta rho_w) + sigmoid(beta rho_l)``. Shapes: ``[B]`` in, ``[B]`` out."""
    return 1 - torch.sigmoid(beta * chosen_logratios) + torch.sigmoid(beta * rejected_logratios)


def apo_down_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float) -> Tensor:
    """APO-down (D'Oosterlinck et al., 2024, arXiv:2408.06266, eq. 8): lower both, the rejected more,
    ``sigmoid(beta rho_w) + 1 - sigmoid(beta d)``. Shapes: ``[B]`` in, ``[B]`` out."""
    d = chosen_logratios - rejected_logratios
    return torch.sigmoid(beta * chosen_logratios) + 1 - torch.sigmoid(beta * d)


def aot_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    eps: float = 0.0,
) -> Tensor:
    """AOT, paired (Melnyk et al., 2024, arXiv:2406.05882): first-order stochastic dominance of the policy's
    chosen-minus-rejected margins over the reference's, by matching their sorted quantiles,
    ``delta = sort_B(log pi(y_w) - log pi(y_l)) - sort_B(log pi_ref(y_w) - log pi_ref(y_l))``, then
    ``-(1 - eps) log sigmoid(beta delta) - eps log sigmoid(-beta delta)``.

    The sort is over the batch, so the loss is a per-batch statistic: under DDP it is per rank (each rank sorts its own
    batch, as in TRL), and larger per-device batches give finer quantiles. Shapes: ``[B]`` summed response log-probs
    of the policy and the reference in (not log-ratios), ``[B]`` out (one per quantile, not per pair).
    """
    margins, ref_margins = chosen_logps - rejected_logps, (ref_chosen_logps - ref_rejected_logps).to(chosen_logps.dtype)
    delta = torch.sort(margins, dim=0)[0] - torch.sort(ref_margins, dim=0)[0]
    return _smoothed(beta * delta, eps)


def aot_unpaired_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float, eps: float = 0.0) -> Tensor:
    """AOT, unpaired (Melnyk et al., 2024, arXiv:2406.05882): the sorted chosen log-ratios should dominate the sorted
    rejected ones, ``delta = sort_B(rho_w) - sort_B(rho_l)``, loss as :func:`aot_loss`. The sort is over the batch: a
    per-batch statistic, per rank under DDP (each rank sorts its own batch). Shapes: ``[B]`` in, ``[B]`` out (per
    quantile)."""
    delta = torch.sort(chosen_logratios, dim=0)[0] - torch.sort(rejected_logratios, dim=0)[0]
    return _smoothed(beta * delta, eps)


def sft_nll_loss(chosen_logprobs: Tensor, chosen_mask: Tensor) -> Tensor:
    """TRL's ``sft`` term (the NLL of the chosen responses, e.g. in MPO, arXiv:2411.10442): ``-mean log pi(y_w,t)`` over
    every chosen response token of the batch (a token mean, not a mean of per-pair means; per rank under DDP).

    Args:
        chosen_logprobs: ``[B, T]`` per-token log-probs of the chosen sequences under the policy.
        chosen_mask: ``[B, T]`` bool/0-1, their response tokens.

    Returns:
        The scalar loss (0 when the batch has no response token).
    """
    mask = chosen_mask.bool()
    return -chosen_logprobs.masked_fill(~mask, 0).sum() / mask.sum().clamp_min(1)


def check_loss_types(
    loss_type: str | Sequence[str],
    loss_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
) -> tuple[list[str], list[float]]:
    """Validate a loss type (or list of them) and its weights as TRL's ``DPOConfig`` and ``DPOTrainer`` do, plus ltune's
    one extra rule: a ``label_smoothing`` that none of the types reads is an error, not a silent no-op.

    Returns:
        The loss types as a list and their weights (all 1.0 by default).

    Raises:
        ValueError: In one line, for an unknown or empty loss type, weights of another length, ``label_smoothing``
            outside ``[0, 0.5)`` or unused, ``exo_pair`` without ``label_smoothing``, or ``discopop_tau <= 0``.
    """
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    if not types:
        raise ValueError(f"loss_type is empty: give one or a list of {', '.join(DPO_LOSS_TYPES)}")
    for name in types:
        if name not in DPO_LOSS_TYPES:
            raise ValueError(f"loss_type {name!r} is not one of {', '.join(DPO_LOSS_TYPES)}")
    weights = [1.0] * len(types) if loss_weights is None else [float(w) for w in loss_weights]
    if len(weights) != len(types):
        raise ValueError(f"loss_weights has {len(weights)} weights for the {len(types)} loss types {types}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing={label_smoothing} must lie in [0, 0.5)")
    if "exo_pair" in types and label_smoothing == 0.0:
        raise ValueError("loss_type 'exo_pair' needs label_smoothing > 0 (its eps; the EXO paper uses 1e-3)")
    if label_smoothing and not set(types) & set(LABEL_SMOOTHED):
        raise ValueError(
            f"label_smoothing={label_smoothing} has no effect on loss_type {types}: it applies to sigmoid (cDPO), "
            "exo_pair, robust, aot and aot_unpaired"
        )
    if "discopop" in types and not discopop_tau > 0:
        raise ValueError(f"discopop_tau={discopop_tau} must be > 0")
    return types, weights


def weighted_dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    loss_type: DPOLossType | Sequence[DPOLossType] = "sigmoid",
    loss_weights: Sequence[float] | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
    chosen_logprobs: Tensor | None = None,
    chosen_mask: Tensor | None = None,
) -> Tensor:
    """``L = sum_k w_k * mean_B(L_k)`` over the loss types ``k`` of TRL's ``DPOTrainer``, on B preference pairs.

    Equal to TRL 1.16's loss for every list of types, with one exception kept on purpose: TRL's ``sigmoid`` ignores
    ``label_smoothing``, ltune's applies it (cDPO), so ``sigmoid`` with another smoothed type and ``eps > 0`` differ.

    Args:
        chosen_logps: ``[B]`` summed response log-probs of the chosen responses under the policy.
        rejected_logps: ``[B]`` the same for the rejected responses.
        ref_chosen_logps: ``[B]`` the chosen responses under the reference (no gradient).
        ref_rejected_logps: ``[B]`` the rejected responses under the reference.
        loss_type: One name or a list of names (TRL's; see :data:`DPO_LOSS_TYPES`).
        loss_weights: One weight per loss type; all 1.0 by default.
        beta: TRL's ``beta`` (default 0.1): the implicit reward's inverse temperature, IPO's tau.
        label_smoothing: eps of ``sigmoid`` (cDPO), ``exo_pair``, ``robust``, ``aot`` and ``aot_unpaired``.
        discopop_tau: DiscoPOP's tau (TRL's and the paper's default 0.05).
        chosen_tokens: ``[B]`` response token counts of the chosen responses (``ipo``, ``sigmoid_norm``).
        rejected_tokens: ``[B]`` the same for the rejected responses.
        chosen_logprobs: ``[B, T]`` per-token log-probs of the chosen sequences under the policy (``sft``).
        chosen_mask: ``[B, T]`` their response tokens (``sft``).

    Returns:
        The scalar loss.
    """
    types, weights = check_loss_types(loss_type, loss_weights, label_smoothing, discopop_tau)
    rho_w = chosen_logps - ref_chosen_logps.to(chosen_logps.dtype)
    rho_l = rejected_logps - ref_rejected_logps.to(rejected_logps.dtype)
    eps, total = label_smoothing, chosen_logps.new_zeros(())
    for name, weight in zip(types, weights):
        if name in ("ipo", "sigmoid_norm") and (chosen_tokens is None or rejected_tokens is None):
            raise ValueError(f"loss_type {name!r} needs chosen_tokens and rejected_tokens (response token counts)")
        if name == "sft" and (chosen_logprobs is None or chosen_mask is None):
            raise ValueError("loss_type 'sft' needs chosen_logprobs and chosen_mask (per-token log-probs)")
        if name == "sigmoid":
            losses = sigmoid_loss(rho_w, rho_l, beta, eps)
        elif name == "hinge":
            losses = hinge_loss(rho_w, rho_l, beta)
        elif name == "ipo":
            losses = ipo_loss(rho_w, rho_l, chosen_tokens, rejected_tokens, beta)
        elif name == "sigmoid_norm":
            losses = sigmoid_norm_loss(rho_w, rho_l, chosen_tokens, rejected_tokens, beta)
        elif name == "exo_pair":
            losses = exo_pair_loss(rho_w, rho_l, beta, eps)
        elif name == "robust":
            losses = robust_loss(rho_w, rho_l, beta, eps)
        elif name == "discopop":
            losses = discopop_loss(rho_w, rho_l, beta, discopop_tau)
        elif name == "nca_pair":
            losses = nca_pair_loss(rho_w, rho_l, beta)
        elif name == "bco_pair":
            losses = bco_pair_loss(rho_w, rho_l, beta)
        elif name == "sppo_hard":
            losses = sppo_hard_loss(rho_w, rho_l, beta)
        elif name == "apo_zero":
            losses = apo_zero_loss(rho_w, rho_l, beta)
        elif name == "apo_down":
            losses = apo_down_loss(rho_w, rho_l, beta)
        elif name == "aot":
            losses = aot_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, eps)
        elif name == "aot_unpaired":
            losses = aot_unpaired_loss(rho_w, rho_l, beta, eps)
        else:  # "sft"; check_loss_types rejected every other name
            losses = sft_nll_loss(chosen_logprobs, chosen_mask)
        total = total + weight * losses.mean()
    return total


__all__ = [
    "DPOLossType", "DPO_LOSS_TYPES", "aot_loss", "aot_unpaired_loss", "apo_down_loss", "apo_zero_loss",
    "bco_pair_loss", "check_loss_types", "discopop_loss", "exo_pair_loss", "hinge_loss", "ipo_loss", "nca_pair_loss",
    "robust_loss", "sft_nll_loss", "sigmoid_loss", "sigmoid_norm_loss", "sppo_hard_loss", "weighted_dpo_loss",
]  # fmt: skip
