"""The DPO family: DPO (Rafailov et al., 2023, arXiv:2305.18290) with conservative label smoothing (cDPO, Mitchell,
2023), IPO (Azar et al., 2023, arXiv:2310.12036) and TRL's other DPO loss types and their weighted combinations
(:mod:`ltune.losses.dpo_types`), and the reference-free SimPO (Meng, Xia and Chen, 2024, arXiv:2405.14734). Names,
defaults and metrics follow TRL's ``DPOTrainer`` (``beta``, ``loss_type``, ``loss_weights``, ``label_smoothing``,
``discopop_tau``) and its CPO trainer's ``loss_type="simpo"`` (``simpo_gamma``), so runs compare metric for metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from ltune.losses.dpo_types import DPOLossType, weighted_dpo_loss


def sequence_logps(logprobs: Tensor, mask: Tensor) -> Tensor:
    """Log-likelihood ``log pi(y|x) = sum_t log pi(y_t | x, y_<t)`` of each row's response.

    Args:
        logprobs: ``[B, T]`` per-token log-probs (float32).
        mask: ``[B, T]`` bool/0-1, the response tokens of each row.

    Returns:
        ``[B]`` summed log-probs.
    """
    return (logprobs * mask.to(logprobs.dtype)).sum(-1)


def _pair_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor, chosen: Tensor, rejected: Tensor) -> dict:
    """TRL's preference metrics, detached: implicit rewards, their accuracy and margin, and the log-likelihoods."""
    cr, rr = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": cr.mean(),
        "rewards/rejected": rr.mean(),
        "rewards/accuracies": (cr > rr).float().mean(),
        "rewards/margins": (cr - rr).mean(),
        "logps/chosen": chosen.detach().mean(),
        "logps/rejected": rejected.detach().mean(),
    }


def dpo_mix_loss(
    chosen_logprobs: Tensor,
    rejected_logprobs: Tensor,
    chosen_mask: Tensor,
    rejected_mask: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    loss_type: DPOLossType | Sequence[DPOLossType] = "sigmoid",
    loss_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Any of TRL 1.16's DPO loss types, or a weighted sum of several, on a batch of B preference pairs.

    ``L = sum_k w_k * mean_B(L_k)`` with each ``L_k`` one of :data:`~ltune.losses.dpo_types.DPO_LOSS_TYPES` on the
    summed response log-ratios ``s = sum_t log pi(y_t) - log pi_ref(y)`` (``ipo``, ``sigmoid_norm``: per token; ``sft``:
    the token-mean NLL of the chosen responses); the formulas are in :mod:`ltune.losses.dpo_types`.

    Args:
        chosen_logprobs: ``[B, T]`` float32 per-token log-probs of the chosen sequences under the policy.
        rejected_logprobs: ``[B, T']`` the same for the rejected sequences.
        chosen_mask: ``[B, T]`` response tokens of the chosen sequences.
        rejected_mask: ``[B, T']`` response tokens of the rejected sequences.
        ref_chosen_logps: ``[B]`` summed response log-probs of the chosen sequences under the reference (no gradient;
            live or precomputed).
        ref_rejected_logps: ``[B]`` the same for the rejected sequences.
        beta: TRL's ``beta`` (0.1): the implicit reward's inverse temperature (IPO's tau).
        loss_type: One name, or a list of names combined with ``loss_weights`` (MPO: ``["sigmoid", "bco_pair",
            "sft"]`` with ``[0.8, 0.2, 1.0]``).
        loss_weights: One weight per loss type; all 1.0 by default.
        label_smoothing: eps in ``[0, 0.5)`` of ``sigmoid`` (cDPO), ``robust``, ``exo_pair`` (needs it > 0), ``aot``
            and ``aot_unpaired``.
        discopop_tau: DiscoPOP's temperature (TRL's default 0.05).

    Returns:
        The scalar loss and detached metrics named as TRL's DPO trainer logs them: ``rewards/chosen``
        (``beta * s_w``), ``rewards/rejected``, ``rewards/accuracies`` (``s_w > s_l``), ``rewards/margins``,
        ``logps/chosen`` (``sum_t log pi(y_w,t)``), ``logps/rejected``.
    """
    chosen, rejected = sequence_logps(chosen_logprobs, chosen_mask), sequence_logps(rejected_logprobs, rejected_mask)
    loss = weighted_dpo_loss(
        chosen,
        rejected,
        ref_chosen_logps,
        ref_rejected_logps,
        loss_type=loss_type,
        loss_weights=loss_weights,
        beta=beta,
        label_smoothing=label_smoothing,
        discopop_tau=discopop_tau,
        chosen_tokens=chosen_mask.sum(-1),
        rejected_tokens=rejected_mask.sum(-1),
        chosen_logprobs=chosen_logprobs,
        chosen_mask=chosen_mask,
    )
    s_w, s_l = chosen - ref_chosen_logps.to(chosen.dtype), rejected - ref_rejected_logps.to(rejected.dtype)
    return loss, _pair_metrics(beta * s_w, beta * s_l, chosen, rejected)


def dpo_loss(
    chosen_logprobs: Tensor,
    rejected_logprobs: Tensor,
    chosen_mask: Tensor,
    rejected_mask: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO or IPO loss of a batch of B preference pairs against a fixed reference: :func:`dpo_mix_loss` with one of
    these two loss types (it takes TRL's others, and weighted combinations).

    With ``s_w = sum_t log pi(y_w,t) - log pi_ref(y_w)`` (the chosen response's log-ratio, summed over its ``|y_w|``
    tokens), ``s_l`` the rejected one's, and ``h = s_w - s_l``::

        sigmoid  L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)     DPO eq. 7; eps > 0 is cDPO
        ipo      L = (s_w / |y_w| - s_l / |y_l| - 1 / (2 beta))^2                  IPO eq. 17, per-token log-ratios

    averaged over the pairs. IPO's ``beta`` is the paper's tau; the per-token normalisation is TRL's (confirmed with
    the IPO authors, its source says). ``eps`` is TRL's ``label_smoothing`` (the probability that a label is flipped).

    Args:
        chosen_logprobs: ``[B, T]`` float32 per-token log-probs of the chosen sequences under the policy.
        rejected_logprobs: ``[B, T']`` the same for the rejected sequences.
        chosen_mask: ``[B, T]`` response tokens of the chosen sequences.
        rejected_mask: ``[B, T']`` response tokens of the rejected sequences.
        ref_chosen_logps: ``[B]`` summed response log-probs of the chosen sequences under the reference.
        ref_rejected_logps: ``[B]`` the same for the rejected sequences.
        beta: Inverse temperature of the implicit reward (DPO) or the regulariser tau (IPO); TRL default 0.1.
        loss_type: ``"sigmoid"`` (DPO) or ``"ipo"``.
        label_smoothing: cDPO's flip probability in ``[0, 0.5)``; 0 is DPO (``sigmoid`` only).

    Returns:
        The scalar loss and the metrics of :func:`dpo_mix_loss`.
    """
    if loss_type not in ("sigmoid", "ipo"):
        raise ValueError(f"dpo_loss takes loss_type 'sigmoid' or 'ipo', got {loss_type!r}; dpo_mix_loss takes all")
    return dpo_mix_loss(
        chosen_logprobs,
        rejected_logprobs,
        chosen_mask,
        rejected_mask,
        ref_chosen_logps,
        ref_rejected_logps,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
    )


def simpo_loss(
    chosen_logprobs: Tensor,
    rejected_logprobs: Tensor,
    chosen_mask: Tensor,
    rejected_mask: Tensor,
    *,
    beta: float = 2.0,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SimPO loss of a batch of B preference pairs: no reference, length-normalised rewards, a target margin.

    With ``l_w = (1/|y_w|) sum_t log pi(y_w,t)`` and ``l_l`` the rejected response's mean log-prob (SimPO eq. 6)::

        L = -(1 - eps) log sigmoid(beta (l_w - l_l) - gamma) - eps log sigmoid(-(beta (l_w - l_l) - gamma))

    averaged over the pairs; ``eps = 0`` is the paper's loss. TRL writes it as ``beta * (l_w - l_l - gamma / beta)``
    (``CPOTrainer``, ``loss_type="simpo"``, ``simpo_gamma`` = gamma, ``cpo_alpha=0``).

    Args:
        chosen_logprobs: ``[B, T]`` float32 per-token log-probs of the chosen sequences.
        rejected_logprobs: ``[B, T']`` the same for the rejected sequences.
        chosen_mask: ``[B, T]`` response tokens of the chosen sequences (at least one per row).
        rejected_mask: ``[B, T']`` response tokens of the rejected sequences.
        beta: Scale of the length-normalised reward (the paper sweeps 2.0-10).
        gamma: Target reward margin (the paper's gamma; it sweeps gamma / beta in 0-1).
        label_smoothing: Flip probability in ``[0, 0.5)`` (TRL's conservative form); 0 is SimPO.

    Returns:
        The scalar loss and detached metrics as TRL's CPO trainer names them: ``rewards/chosen`` (``beta * l_w``),
        ``rewards/rejected``, ``rewards/accuracies`` (``l_w > l_l``), ``rewards/margins``, ``logps/chosen``
        (``l_w``), ``logps/rejected``.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing={label_smoothing} must lie in [0, 0.5)")
    n_w, n_l = chosen_mask.sum(-1).clamp_min(1), rejected_mask.sum(-1).clamp_min(1)
    lw = sequence_logps(chosen_logprobs, chosen_mask) / n_w
    ll = sequence_logps(rejected_logprobs, rejected_mask) / n_l
    h = beta * (lw - ll) - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    return losses.mean(), _pair_metrics(beta * lw, beta * ll, lw, ll)


__all__ = ["DPOLossType", "dpo_loss", "dpo_mix_loss", "sequence_logps", "simpo_loss"]
