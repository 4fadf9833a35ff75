"""CUT: Contrastive Unlikelihood Training ("Reasons to Reject? Aligning Language Models with Judgments",
Xu et al., 2023, arXiv:2312.14591; code: wwxu21/CUT).

CUT is MLE plus token-level *unlikelihood* (Welleck et al., 2020) on the tokens that a negative judgment singles
out. It has no odds-ratio term.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def cut_loss(
    aligned_logprobs: Tensor,
    judged_logprobs: Tensor,
    misaligned_logprobs: Tensor,
    *,
    threshold: float = 1.1,
    weighting: Literal["paper", "constant"] = "paper",
    alpha: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-5,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CUT loss of one batch, from per-token log-probs of response tokens (flattened over the batch).

    Three contexts score the same response ``y``: Align-P (``x -> y``, y judged good), Align-N (``[x, j-] -> y``,
    the negative judgment makes y aligned) and Misalign (``x -> y`` for a negatively judged y). A Misalign token is
    flagged when the judgment raised its probability (paper Eq. 5; ratio detached, as in the code)::

        U = { t : p(y_t | x, j-, y_<t) / p(y_t | x, y_<t) > threshold }

        L_MLE      = -mean over Align-P and Align-N tokens of log p(y_t | context)
        L_misalign = -mean over Misalign tokens of [ log p(y_t | x)          if t not in U
                                                     w_t log(1 - p(y_t | x))  if t in U ]
        L          = (L_MLE + L_misalign) / 2   (L_MLE alone when the batch has no negative)

    ``w_t = alpha * sg[p(y_t | x, j-)]^gamma`` with ``weighting="paper"`` (Eq. 6's dynamic weight; detached here:
    it is a weight, not a second path that would push the Align-N probability down), or the released code's
    constant ``w_t = alpha`` (its ``weight_unlike``; 1 online, 0.5 offline) with ``weighting="constant"``. The
    per-term token means and the ``/2`` follow the released code. ``1 - p`` is floored at ``eps`` as the code does.

    Args:
        aligned_logprobs: ``[N_a]`` log-probs of the Align-P and Align-N response tokens.
        judged_logprobs: ``[N_m]`` log-probs of the negative responses' tokens under Align-N (``x, j-``).
        misaligned_logprobs: ``[N_m]`` log-probs of the same tokens, in the same order, under Misalign (``x``).
        threshold: lambda of the detection criterion (1.1 in the code; 1.1-1.2 in the paper).
        weighting: ``"paper"`` (``alpha * p^gamma``) or ``"constant"`` (``alpha``).
        alpha: Scale of the unlikelihood weight (paper grid 0.25/0.5/1).
        gamma: Exponent of the paper's dynamic weight (paper grid 0.25/0.5/1/2).
        eps: Floor of ``1 - p`` inside the unlikelihood log.

    Returns:
        The scalar loss and detached metrics: ``mle_loss``, ``misalign_loss``, ``ul_token_frac`` (|U| / Misalign
        tokens), ``ratio_mean`` (mean p(j-)/p(no j) over Misalign tokens), ``p_flagged`` (mean p(y_t | x) of the
        flagged tokens), ``misaligned_tokens``.
    """
    if judged_logprobs.shape != misaligned_logprobs.shape:
        raise ValueError(f"Align-N {tuple(judged_logprobs.shape)} != Misalign {tuple(misaligned_logprobs.shape)}")
    mle = -aligned_logprobs.mean() if aligned_logprobs.numel() else aligned_logprobs.sum()
    metrics = {"mle_loss": mle.detach()}
    zero = mle.detach() * 0
    if misaligned_logprobs.numel() == 0:
        metrics.update(misalign_loss=zero, ul_token_frac=zero, ratio_mean=zero, p_flagged=zero, misaligned_tokens=zero)
        return mle, metrics
    log_ratio = (judged_logprobs - misaligned_logprobs).detach()
    flagged = log_ratio > torch.log(torch.tensor(threshold, dtype=log_ratio.dtype))
    p = misaligned_logprobs.exp()
    if weighting == "paper":
        weight = alpha * judged_logprobs.detach().exp() ** gamma
    elif weighting == "constant":
        weight = torch.full_like(p, alpha)
    else:
        raise ValueError(f"weighting must be 'paper' or 'constant', got {weighting!r}")
    unlikelihood = -weight * torch.log((1 - p).clamp_min(eps))
    misalign = torch.where(flagged, unlikelihood, -misaligned_logprobs).mean()
    loss = (mle + misalign) / 2
    pf = p.detach()[flagged]
    metrics.update(
        misalign_loss=misalign.detach(),
        ul_token_frac=flagged.float().mean(),
        ratio_mean=log_ratio.exp().mean(),
        p_flagged=pf.mean() if pf.numel() else zero,
        misaligned_tokens=zero + flagged.numel(),
    )
    return loss, metrics


__all__ = ["cut_loss"]
