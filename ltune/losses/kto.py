"""KTO: Kahneman-Tversky Optimization on unpaired desirable/undesirable completions (Ethayarajh et al., 2024,
arXiv:2402.01306), and the unpaired APO-zero loss (D'Oosterlinck et al., 2024, arXiv:2408.06266). Names, defaults,
normalisation and metrics follow TRL's ``KTOTrainer`` (``beta``, ``desirable_weight``, ``undesirable_weight``,
``loss_type``), so runs compare metric for metric.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ltune.losses.dpo import sequence_logps

KTOLossType = Literal["kto", "apo_zero_unpaired"]


def kto_kl(kl_logps: Tensor, ref_kl_logps: Tensor, all_sum: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """KTO's reference point ``z0``: the batch estimate of ``KL(pi || pi_ref)`` from mismatched pairs.

    With ``y'_j`` a completion that belongs to another row than the prompt ``x_j`` (paper eq. 7 and its batch
    estimate in section 4.2)::

        z0 = max(0, (1/m) sum_j [log pi(y'_j | x_j) - log pi_ref(y'_j | x_j)])

    computed without gradient (TRL: under ``no_grad``, then ``.detach()`` and ``.clamp(min=0)``). ``all_sum`` sums
    the pair ``(sum of differences, count)`` across data-parallel ranks before the division, so the mean runs over
    every rank's mismatched pairs (TRL averages the per-rank means, the same when every rank holds as many pairs).

    Args:
        kl_logps: ``[m]`` summed log-probs of the mismatched completions under the policy.
        ref_kl_logps: ``[m]`` the same under the reference.
        all_sum: Optional all-reduce (sum) of a tensor across ranks, e.g. Lightning's
            ``strategy.reduce(t, reduce_op="sum")``; None: this process's pairs only.

    Returns:
        The scalar ``z0`` (detached, ``>= 0``).
    """
    with torch.no_grad():
        diff = (kl_logps - ref_kl_logps.to(kl_logps.dtype)).detach()
        stats = torch.stack([diff.sum(), torch.tensor(float(diff.numel()), dtype=diff.dtype, device=diff.device)])
        if all_sum is not None:
            stats = all_sum(stats)
        return (stats[0] / stats[1]).clamp(min=0)


def kto_loss(
    logprobs: Tensor,
    mask: Tensor,
    ref_logps: Tensor,
    labels: Tensor,
    kl: Tensor | None = None,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    loss_type: KTOLossType = "kto",
) -> tuple[Tensor, dict[str, Tensor]]:
    """KTO (or unpaired APO-zero) loss of a batch of B unpaired completions, each desirable or undesirable.

    With ``rho = log pi(y|x) - log pi_ref(y|x)`` (the completion's summed log-ratio) and ``z0`` from :func:`kto_kl`::

        kto                desirable  1 - sigmoid(beta (rho - z0))    undesirable  1 - sigmoid(beta (z0 - rho))
        apo_zero_unpaired  desirable  1 - sigmoid(beta rho)           undesirable  sigmoid(beta rho)

    (KTO eq. 7 with TRL's ``lambda_y - v(x, y)`` written as ``1 - sigmoid``). The loss is the mean over the B
    examples of ``desirable_weight * L_d`` and ``undesirable_weight * L_u``: divided by the number of examples, not by
    the sum of the weights (TRL's ``losses.nanmean()``). ``z0`` carries no gradient.

    Args:
        logprobs: ``[B, T]`` float32 per-token log-probs of the sequences under the policy.
        mask: ``[B, T]`` bool/0-1, the completion tokens of each row.
        ref_logps: ``[B]`` summed completion log-probs under the reference (no gradient; live or precomputed).
        labels: ``[B]`` bool, True for a desirable completion.
        kl: The scalar ``z0`` (``kto`` only; ignored by ``apo_zero_unpaired``).
        beta: Inverse temperature of the implicit reward; TRL default 0.1.
        desirable_weight: ``lambda_D``, weight of the desirable losses (TRL default 1.0).
        undesirable_weight: ``lambda_U``, weight of the undesirable losses (TRL default 1.0).
        loss_type: ``"kto"`` or ``"apo_zero_unpaired"``.

    Returns:
        The scalar loss and detached metrics as TRL's KTO trainer names them: ``kl`` (``z0``; 0 for APO-zero),
        ``rewards/chosen`` and ``logps/chosen`` (the mean of ``beta * rho`` and of ``log pi(y|x)`` over the desirable
        rows) when the batch has one, ``rewards/rejected`` and ``logps/rejected`` likewise, and ``rewards/margins``
        (their difference) when it has both.
    """
    if loss_type not in ("kto", "apo_zero_unpaired"):
        raise ValueError(f"loss_type must be 'kto' or 'apo_zero_unpaired', got {loss_type!r}")
    if loss_type == "kto" and kl is None:
        raise ValueError("loss_type='kto' needs the KL estimate z0 (kto_kl)")
    logps = sequence_logps(logprobs, mask)
    rho = logps - ref_logps.to(logps.dtype)
    labels = labels.to(device=logps.device, dtype=torch.bool)
    if loss_type == "kto":
        z0 = kl.detach().to(logps.dtype)
        desirable, undesirable = 1 - torch.sigmoid(beta * (rho - z0)), 1 - torch.sigmoid(beta * (z0 - rho))
    else:
        z0 = torch.zeros((), dtype=logps.dtype, device=logps.device)
        desirable, undesirable = 1 - torch.sigmoid(beta * rho), torch.sigmoid(beta * rho)
    losses = torch.where(labels, desirable_weight * desirable, undesirable_weight * undesirable)
    metrics = {"kl": z0.detach()}
    rewards, logps = beta * rho.detach(), logps.detach()
    for name, rows in (("chosen", labels), ("rejected", ~labels)):
        if rows.any():
            metrics[f"rewards/{name}"], metrics[f"logps/{name}"] = rewards[rows].mean(), logps[rows].mean()
    if labels.any() and not labels.all():
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return losses.mean(), metrics


__all__ = ["KTOLossType", "kto_kl", "kto_loss"]
