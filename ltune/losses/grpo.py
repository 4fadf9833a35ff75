"""GRPO: group-normalised advantages and the clipped policy-gradient loss with its aggregation variants.

Shao et al., 2024 (DeepSeekMath, arXiv:2402.03300); Yu et al., 2025 (DAPO, arXiv:2503.14476); Liu et al., 2025
(Dr. GRPO, arXiv:2503.20783); Zheng et al., 2025 (GSPO, arXiv:2507.18071); MiniMax, 2025 (CISPO, arXiv:2506.13585);
Ahmadian et al., 2024 (RLOO, arXiv:2402.14740). Names and defaults follow TRL's ``GRPOTrainer`` (``scale_rewards``,
``epsilon``, ``epsilon_high``, ``beta``, ``loss_type``, ``importance_sampling_level``) and ``RLOOTrainer``
(``normalize_advantages``) so runs compare metric for metric.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

RewardScale = Literal["group", "batch", "none"]
LossType = Literal["grpo", "bnpo", "dapo", "dr_grpo", "cispo"]
ImportanceLevel = Literal["token", "sequence"]


def group_advantages(
    rewards: Tensor, group_size: int, scale: RewardScale = "group", eps: float = 1e-4
) -> tuple[Tensor, dict[str, Tensor]]:
    """Outcome advantages: the reward minus its group mean, divided by a standard deviation.

    A_i = (R_i - mean_{j in g(i)} R_j) / (std + eps), where std is the Bessel-corrected standard deviation of the
    group of ``i`` (``scale="group"``, GRPO), of the whole batch (``"batch"``), or 1 without ``eps``
    (``"none"``, Dr. GRPO). TRL uses ``eps = 1e-4``. A NaN reward (a completion no reward function scored) is left out
    of the means and standard deviations and its advantage is 0, as in TRL.

    Args:
        rewards: ``[N]`` rewards, prompt-major: rows ``k*G .. k*G+G-1`` share a prompt; NaN where unscored.
        group_size: ``G``, completions per prompt (>= 2); must divide ``N``.
        scale: Which standard deviation divides the centred rewards.
        eps: Added to the standard deviation.

    Returns:
        ``[N]`` float32 advantages and detached metrics over the scored completions, as TRL logs them: ``reward``
        (mean), ``reward_std`` (standard deviation over the batch) and ``frac_reward_zero_std`` (share of groups whose
        rewards are all equal, so their advantages are 0).
    """
    n = rewards.numel()
    if group_size < 2 or n % group_size:
        raise ValueError(f"group_size={group_size} must be >= 2 and divide the {n} rewards")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    r = rewards.float().view(-1, group_size)
    mean, std, batch_std = r.nanmean(1, keepdim=True), nanstd(r, 1), nanstd(r.reshape(-1), 0)
    centred = r - mean
    if scale == "group":
        adv = centred / (std + eps)
    elif scale == "batch":
        adv = centred / (batch_std + eps)
    else:
        adv = centred
    metrics = {
        "reward": r.nanmean().detach(),
        "reward_std": batch_std.squeeze().detach(),
        "frac_reward_zero_std": torch.isclose(std, torch.zeros_like(std)).float().mean().detach(),
    }
    return adv.nan_to_num(0.0).reshape(-1), metrics


def nanstd(x: Tensor, dim: int) -> Tensor:
    """Bessel-corrected standard deviation over ``dim`` ignoring NaN (kept dim; NaN with fewer than 2 values)."""
    count = (~x.isnan()).sum(dim, keepdim=True)
    dev = (x - x.nanmean(dim, keepdim=True)).pow(2).nansum(dim, keepdim=True)
    return (dev / (count - 1)).sqrt().where(count > 1, torch.nan)


def rloo_advantages(
    rewards: Tensor, group_size: int, normalize: bool = False, eps: float = 1e-4
) -> tuple[Tensor, dict[str, Tensor]]:
    """RLOO advantages: each reward minus the mean of the other ``G - 1`` rewards of its group (leave-one-out).

    A_i = R_i - (sum_{j in g(i)} R_j - R_i) / (G - 1) = G / (G - 1) (R_i - mean_g R); with ``normalize`` (TRL's
    ``normalize_advantages``) then ``(A - mean(A)) / (std(A) + eps)`` over the batch. NaN rewards (unscored) are
    left out: the others of a group are its scored rewards, and an unscored completion's advantage is 0.

    Args:
        rewards: ``[N]`` rewards, prompt-major (rows ``k*G .. k*G+G-1`` share a prompt).
        group_size: ``G`` >= 2, dividing ``N``.
        normalize: Standardise the advantages over the batch.
        eps: Added to the standard deviation when normalising.

    Returns:
        ``[N]`` float32 advantages and the metrics of :func:`group_advantages`.
    """
    _, metrics = group_advantages(rewards, group_size, "none")
    r = rewards.float().view(-1, group_size)
    others = (~r.isnan()).sum(1, keepdim=True) - 1
    adv = (r - (r.nansum(1, keepdim=True) - r) / others).reshape(-1)
    if normalize:
        adv = (adv - adv.nanmean()) / (nanstd(adv, 0) + eps)
    return adv.nan_to_num(0.0, posinf=0.0, neginf=0.0), metrics


def grpo_loss(
    logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    old_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: LossType = "dapo",
    max_completion_length: int | None = None,
    num_items_in_batch: float | Tensor | None = None,
    importance_sampling_level: ImportanceLevel = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate (or CISPO's clipped weight) with an optional k3 KL penalty, aggregated as GRPO, BNPO, DAPO,
    Dr. GRPO or CISPO.

    Per token, with the importance ratio r and Delta = log pi_ref - log pi_theta::

        r_{i,t} = exp(log pi_theta - log pi_old)                                     token level (GRPO)
        r_i     = exp((1/|o_i|) sum_t (log pi_theta - log pi_old))                   sequence level (GSPO)
        l_{i,t} = -min(r A_i, clip(r, 1 - eps_low, 1 + eps_high) A_i) + beta * (exp(Delta) - Delta - 1)
        cispo:  l_{i,t} = -sg[min(r, eps_high)] A_i log pi_theta + beta * (...)      (eps_high is the cap, ~5)

    aggregated over the mask m (B completions, L_max = ``max_completion_length``)::

        grpo     (1/B) sum_i (sum_t m l / sum_t m)               sequence mean of token means (DeepSeekMath)
        bnpo     sum_{i,t} m l / sum_{i,t} m                     token mean over this micro-batch
        dapo     sum_{i,t} m l / num_items_in_batch              token mean over the global batch (DAPO)
        dr_grpo  sum_{i,t} m l / (B * L_max)                     constant normaliser (Dr. GRPO)
        cispo    as dapo

    GSPO is ``importance_sampling_level="sequence"`` with ``loss_type="grpo"`` (the paper's per-sequence objective;
    with the token-sum aggregations each sequence weighs by its length, TRL warns).

    ``old_logprobs=None`` means on-policy (pi_old = sg[pi_theta]): r = 1, the loss value is -mean(A) (+ KL) but its
    gradient is -A grad log pi. The k3 estimator is unbiased for KL(pi_theta || pi_ref) under samples of pi_theta.

    Args:
        logprobs: ``[B, C]`` log-probs of the sampled tokens under the policy (with gradient).
        advantages: ``[B]`` advantages, one per completion.
        mask: ``[B, C]`` 1 on completion tokens.
        old_logprobs: ``[B, C]`` log-probs under the policy that sampled, or None (on-policy).
        ref_logprobs: ``[B, C]`` log-probs under the reference; required when ``beta > 0``.
        beta: KL coefficient (TRL default 0.0).
        epsilon_low: Lower clip range (TRL ``epsilon``, 0.2).
        epsilon_high: Upper clip range; None = ``epsilon_low`` (DAPO's clip-higher uses 0.28). For ``cispo`` the cap
            of the importance weight itself (required; 5.0 in ScaleRL, TRL's recommendation).
        loss_type: Aggregation, see above (TRL default ``"dapo"``).
        max_completion_length: L_max of ``dr_grpo``.
        num_items_in_batch: Completion tokens of the global batch for ``dapo`` (all ranks; divide by the number of
            processes when gradients are averaged across them); None = this micro-batch's count.
        importance_sampling_level: ``"token"`` (GRPO) or ``"sequence"`` (GSPO: one ratio per completion).

    Returns:
        The scalar loss and detached metrics: ``kl`` (masked token mean, when ``beta > 0``), and
        ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean`` (``cispo``:
        ``cispo_clip_ratio``, the share of weights capped), over tokens (over completions at sequence level).
    """
    if loss_type == "cispo" and epsilon_high is None:
        raise ValueError("loss_type='cispo' needs epsilon_high: the cap of the importance weight (5.0 in ScaleRL)")
    eps_high = epsilon_low if epsilon_high is None else epsilon_high
    m = mask.to(logprobs.dtype)
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    log_ratio = logprobs - old
    if importance_sampling_level == "sequence":
        log_ratio = ((log_ratio * m).sum(-1) / m.sum(-1).clamp_min(1)).unsqueeze(1)  # [B, 1]
    elif importance_sampling_level != "token":
        raise ValueError(f"importance_sampling_level must be 'token' or 'sequence', got {importance_sampling_level!r}")
    ratio = torch.exp(log_ratio)
    adv = advantages.to(logprobs.dtype).unsqueeze(1)
    if loss_type == "cispo":
        per_token = -torch.clamp(ratio, max=eps_high).detach() * adv * logprobs
    else:
        per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon_low, 1 + eps_high) * adv)
    metrics: dict[str, Tensor] = {}
    tokens = m.sum().clamp_min(1)

    def masked_mean(x: Tensor) -> Tensor:  # over tokens, or over completions for one value per completion
        return (x.mean() if x.shape[1] == 1 else (x * m).sum() / tokens).detach()

    if beta != 0.0:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs ref_logprobs")
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
        metrics["kl"] = ((kl * m).sum() / tokens).detach()
    if loss_type == "cispo":
        metrics["cispo_clip_ratio"] = masked_mean(((ratio > eps_high) & (adv > 0)).to(m.dtype))
    else:
        low = ((ratio < 1 - epsilon_low) & (adv < 0)).to(m.dtype)
        high = ((ratio > 1 + eps_high) & (adv > 0)).to(m.dtype)
        metrics["clip_ratio/low_mean"] = masked_mean(low)
        metrics["clip_ratio/high_mean"] = masked_mean(high)
        metrics["clip_ratio/region_mean"] = masked_mean((low + high).clamp_max(1))
    total = (per_token * m).sum()
    if loss_type == "grpo":
        loss = ((per_token * m).sum(1) / m.sum(1).clamp_min(1)).mean()
    elif loss_type == "bnpo":
        loss = total / tokens
    elif loss_type in ("dapo", "cispo"):
        norm = tokens if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=m.dtype)
        loss = total / norm.clamp_min(1)
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type='dr_grpo' needs max_completion_length")
        loss = total / (logprobs.shape[0] * max_completion_length)
    else:
        raise ValueError(f"loss_type must be one of grpo, bnpo, dapo, dr_grpo, cispo; got {loss_type!r}")
    return loss, metrics


__all__ = ["ImportanceLevel", "LossType", "RewardScale", "group_advantages", "grpo_loss", "rloo_advantages"]
