"""CoIN: Contrastive Instruction Tuning (Yan et al., 2024, arXiv:2402.11138; code: luka-group/CoIN).

Generation loss on an instruction and on its paraphrase, plus a symmetric InfoNCE that pulls the two sequences'
representations together and pushes other in-batch examples (hard negatives included) apart.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def info_nce(
    h: Tensor,
    h_pos: Tensor,
    tau: float = 0.05,
    h_all: Tensor | None = None,
    h_pos_all: Tensor | None = None,
    offset: int = 0,
) -> tuple[Tensor, Tensor]:
    """Symmetric (CLIP-style) InfoNCE over cosine similarities.

    ``s_kl = cos(h_k, h+_l) / tau``; ``L = (CE(s, diag) + CE(s^T, diag)) / 2`` with in-batch negatives. With
    ``h_all``/``h_pos_all`` (the candidates of every rank, this rank's rows at ``offset``) each local row is scored
    against all of them, in both directions.

    Args:
        h: ``[B, H]`` representations of the original instructions.
        h_pos: ``[B, H]`` representations of their paraphrases.
        tau: Temperature (0.05 in CoIN).
        h_all: ``[N, H]`` candidate originals (default ``h``).
        h_pos_all: ``[N, H]`` candidate paraphrases (default ``h_pos``).
        offset: Index of this rank's first row among the candidates.

    Returns:
        ``(loss, s)`` with ``s = cos(h, h_pos_all) / tau`` of shape ``[B, N]``.
    """
    h_all = h if h_all is None else h_all
    h_pos_all = h_pos if h_pos_all is None else h_pos_all
    h, h_pos, h_all, h_pos_all = (F.normalize(x.float(), dim=-1) for x in (h, h_pos, h_all, h_pos_all))
    target = torch.arange(h.shape[0], device=h.device) + offset
    s = h @ h_pos_all.T / tau
    s_rev = h_pos @ h_all.T / tau
    return (F.cross_entropy(s, target) + F.cross_entropy(s_rev, target)) / 2, s


def coin_loss(
    orig_logprobs: Tensor,
    orig_mask: Tensor,
    para_logprobs: Tensor,
    para_mask: Tensor,
    h: Tensor,
    h_pos: Tensor,
    *,
    tau: float = 0.05,
    contrastive_weight: float = 1000.0,
    h_all: Tensor | None = None,
    h_pos_all: Tensor | None = None,
    offset: int = 0,
    hard_negative: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CoIN loss of B (instruction, paraphrase) pairs with the same input and output.

    ::

        L_gen = CE_orig + CE_para          (each a token-mean NLL of the output tokens, prompt masked)
        C     = lambda * InfoNCE(h, h+; tau)
        C     = C * min(lambda, sg[L_gen] / sg[C])   if C > L_gen      (the code's scale_contrastive_loss)
        L     = L_gen + C

    so the contrastive term keeps its gradient direction but its value never exceeds the generation loss.
    ``lambda = 0`` is the paper's "continual instruction tuning" ablation (generation loss on both versions).

    Args:
        orig_logprobs: ``[B, T]`` per-token log-probs of the original-instruction sequences.
        orig_mask: ``[B, T]`` their output tokens.
        para_logprobs: ``[B, T']`` the same for the paraphrased-instruction sequences.
        para_mask: ``[B, T']`` their output tokens.
        h: ``[B, H]`` final hidden state of each original sequence's last real token.
        h_pos: ``[B, H]`` the same for the paraphrased sequences.
        tau: InfoNCE temperature (0.05).
        contrastive_weight: lambda (the code's ``contrastive_loss_ratio``, 1000).
        h_all: Candidate originals gathered across ranks (see :func:`info_nce`).
        h_pos_all: Candidate paraphrases gathered across ranks.
        offset: Index of this rank's first row among the candidates.
        hard_negative: ``[B]`` long, the in-batch index of each row's hard negative (``-1`` for none).

    Returns:
        The scalar loss and detached metrics: ``generation_loss``, ``original_generation_loss``,
        ``paraphrased_generation_loss``, ``contrastive_loss`` (after lambda and the rescale), ``info_nce``
        (before), ``retrieval_acc`` (argmax_l s_kl == k), ``pos_cos`` (cos(h_k, h+_k)) and, with
        ``hard_negative``, ``hard_neg_cos`` (cos(h_k, h+ of its hard negative)).
    """
    ce = []
    for lp, m in ((orig_logprobs, orig_mask), (para_logprobs, para_mask)):
        m = m.to(lp.dtype)
        ce.append(-(lp * m).sum() / m.sum().clamp_min(1))
    gen = ce[0] + ce[1]
    nce, s = info_nce(h, h_pos, tau, h_all, h_pos_all, offset)
    ctr = contrastive_weight * nce
    if contrastive_weight > 0 and ctr.detach() > gen.detach():
        ctr = ctr * torch.clamp(gen.detach() / ctr.detach(), max=contrastive_weight)
    loss = gen + ctr
    cos = F.cosine_similarity(h.detach().float(), h_pos.detach().float(), dim=-1)
    rows = torch.arange(h.shape[0], device=h.device)
    metrics = {
        "generation_loss": gen.detach(),
        "original_generation_loss": ce[0].detach(),
        "paraphrased_generation_loss": ce[1].detach(),
        "contrastive_loss": ctr.detach(),
        "info_nce": nce.detach(),
        "retrieval_acc": (s.detach().argmax(-1) == rows + offset).float().mean(),
        "pos_cos": cos.mean(),
    }
    if hard_negative is not None and (hard_negative >= 0).any():
        k = rows[hard_negative >= 0]
        neg_cos = F.cosine_similarity(h.detach()[k].float(), h_pos.detach()[hard_negative[k]].float(), dim=-1)
        metrics["hard_neg_cos"] = neg_cos.mean()
    return loss, metrics


__all__ = ["coin_loss", "info_nce"]
