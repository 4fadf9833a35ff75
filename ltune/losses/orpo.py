"""ORPO: Odds Ratio Preference Optimization (Hong, Lee and Thorne, 2024, arXiv:2403.07691).

Monolithic preference optimisation without a reference model: an SFT term on the chosen sequence plus a
log-sigmoid of the log odds ratio between the chosen and the rejected response.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

OddsRatioFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def mean_logprob(logprobs: Tensor, mask: Tensor) -> Tensor:
    """Length-normalised log-likelihood ``l(y|x) = (1/|y|) sum_t log p(y_t | x, y_<t)`` of each row.

    Args:
        logprobs: ``[B, T]`` per-token log-probs (float32).
        mask: ``[B, T]`` bool/0-1, the response tokens of each row (at least one per row).

    Returns:
        ``[B]`` mean log-prob per row.
    """
    m = mask.to(logprobs.dtype)
    return (logprobs * m).sum(-1) / m.sum(-1).clamp_min(1)


def orpo_loss(
    chosen_logprobs: Tensor,
    rejected_logprobs: Tensor,
    chosen_mask: Tensor,
    rejected_mask: Tensor,
    nll_mask: Tensor | None = None,
    *,
    beta: float = 0.1,
    odds_ratio: OddsRatioFn,
) -> tuple[Tensor, dict[str, Tensor]]:
    """ORPO loss of a batch of B preference pairs.

    With ``l_w``, ``l_l`` the length-normalised log-likelihoods of the chosen and rejected *responses*::

        log OR = log odds(y_w|x) - log odds(y_l|x),   odds(y|x) = P / (1 - P),  P = exp(l(y|x))
               = (l_w - l_l) - (log(1 - e^{l_w}) - log(1 - e^{l_l}))
        L_OR   = -log sigmoid(log OR)
        L      = NLL + beta * mean_pairs(L_OR)

    ``NLL`` is the token-mean negative log-likelihood of the chosen sequences over ``nll_mask`` (all the tokens
    of the batch's chosen sequences together, Hugging Face's causal-LM loss). ``beta`` is the paper's lambda
    (TRL's ``beta``, the ORPO repository's ``alpha``); the paper's main runs use 0.1. The odds are computed in
    float32 with a stable ``log(1 - e^x)``; TRL's ``loss = nll - mean(beta * logsigmoid(log OR))`` is the same.

    Args:
        chosen_logprobs: ``[B, T]`` float32 per-token log-probs of the chosen sequences (0 where unscored).
        rejected_logprobs: ``[B, T']`` the same for the rejected sequences.
        chosen_mask: ``[B, T]`` response tokens of the chosen sequences (the odds use these).
        rejected_mask: ``[B, T']`` response tokens of the rejected sequences.
        nll_mask: ``[B, T]`` tokens of the SFT term; defaults to ``chosen_mask`` (response only). The paper's code
            and TRL use prompt + response.
        beta: Weight lambda of the odds-ratio term.
        odds_ratio: ``(l_w [B], l_l [B]) -> (L_OR [B], log OR [B])`` in float32: :func:`ltune.kernels.odds_ratio_loss`
            (fused backward; what :class:`ltune.ORPO` passes) or its plain-autograd definition
            :func:`ltune.kernels.reference.reference_odds_ratio_loss` (one home of the formula; a loss may not import
            kernels, so the caller passes it).

    Returns:
        The scalar loss and detached metrics named as TRL's ORPO trainer logs them: ``rewards/chosen``
        (``beta * l_w``), ``rewards/rejected``, ``rewards/accuracies`` (``l_w > l_l``), ``rewards/margins``,
        ``logps/chosen`` (``l_w``), ``logps/rejected``, ``nll_loss``, ``log_odds_ratio`` (mean
        ``log sigmoid(log OR)``), ``log_odds_chosen`` (mean ``log OR``), plus ``or_loss`` (mean ``L_OR``).
    """
    if chosen_logprobs.shape[0] != rejected_logprobs.shape[0]:
        raise ValueError(f"{chosen_logprobs.shape[0]} chosen rows but {rejected_logprobs.shape[0]} rejected rows")
    nll_mask = chosen_mask if nll_mask is None else nll_mask
    m = nll_mask.to(chosen_logprobs.dtype)
    nll = -(chosen_logprobs * m).sum() / m.sum().clamp_min(1)
    lw, ll = mean_logprob(chosen_logprobs, chosen_mask), mean_logprob(rejected_logprobs, rejected_mask)
    or_loss, log_odds = odds_ratio(lw, ll)
    loss = nll + beta * or_loss.mean()
    lw, ll, or_loss, log_odds = lw.detach(), ll.detach(), or_loss.detach(), log_odds.detach()
    metrics = {
        "rewards/chosen": beta * lw.mean(),
        "rewards/rejected": beta * ll.mean(),
        "rewards/accuracies": (lw > ll).float().mean(),
        "rewards/margins": beta * (lw - ll).mean(),
        "logps/chosen": lw.mean(),
        "logps/rejected": ll.mean(),
        "nll_loss": nll.detach(),
        "log_odds_ratio": -or_loss.mean(),
        "log_odds_chosen": log_odds.mean(),
        "or_loss": or_loss.mean(),
    }
    return loss, metrics


__all__ = ["mean_logprob", "orpo_loss"]
