"""CoIN: generation loss on an instruction and its paraphrase + a contrastive term that aligns their
representations (Yan et al., 2024, arXiv:2402.11138, "Contrastive Instruction Tuning").

ltune fit --config configs/objectives/coin.yaml
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from ltune.forward import hidden_states, last_token_states, unwrap
from ltune.kernels import IGNORE_INDEX, linear_token_logprobs
from ltune.losses.coin import coin_loss
from ltune.objectives.base import Objective

LOGGED = (
    "loss",
    "generation_loss",
    "original_generation_loss",
    "paraphrased_generation_loss",
    "contrastive_loss",
    "info_nce",
    "retrieval_acc",
    "pos_cos",
    "hard_neg_cos",
)


class CoIN(Objective):
    """Contrastive Instruction Tuning on ``ParaphraseData`` batches (originals and paraphrases stacked).

    One forward over the ``2B`` sequences gives both the output-token log-probs (through :mod:`ltune.kernels`)
    and the representation of each sequence: the final (normed) hidden state of its last real token, prompt and
    output included (CoIN's ``pooling_method='last'``; right padding, so gathered at ``attention_mask.sum() - 1``).
    In-batch negatives include each row's hard negative (its neighbour in the pair layout of ``ParaphraseData``).

    Logs under ``train/`` and ``val/``: ``loss``, ``generation_loss`` (+ ``original_``/``paraphrased_``),
    ``contrastive_loss`` (after lambda and the rescale), ``info_nce``, ``retrieval_acc`` (in-batch retrieval of
    each original's paraphrase), ``pos_cos`` and ``hard_neg_cos`` (cosine to the paraphrase of the hard negative).

    Args:
        tau: InfoNCE temperature (0.05 in CoIN).
        contrastive_weight: lambda (CoIN's ``contrastive_loss_ratio``, 1000); the term is rescaled so its value
            never exceeds the generation loss. 0 gives the paper's "continual instruction tuning" ablation.
        gather_negatives: Under DDP, score each row against the candidates of every rank (differentiable
            all-gather). Not in CoIN's code, whose tiny micro-batches give few negatives; a deliberate option.
        **kwargs: Arguments of :class:`~ltune.objectives.base.Objective` (backbone, optimizer, scheduler, ...).
    """

    def __init__(
        self, tau: float = 0.05, contrastive_weight: float = 1000.0, gather_negatives: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.tau, self.contrastive_weight, self.gather_negatives = tau, contrastive_weight, gather_negatives
        self.val_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in LOGGED})

    def forward_loss(self, batch: dict):
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        n = ids.shape[0] // 2
        hidden = hidden_states(self.model, ids, mask)
        head = unwrap(self.model).get_output_embeddings()
        lp = linear_token_logprobs(
            hidden[:, :-1], head.weight, labels[:, 1:], bias=getattr(head, "bias", None)
        ).logprobs
        pooled = last_token_states(hidden, mask)
        h, h_pos = pooled[:n], pooled[n:]
        h_all = h_pos_all = None
        offset = 0
        if self.gather_negatives and self.trainer is not None and self.trainer.world_size > 1:
            h_all = self.all_gather(h, sync_grads=True).flatten(0, 1)
            h_pos_all = self.all_gather(h_pos, sync_grads=True).flatten(0, 1)
            offset = self.trainer.global_rank * n
        response = labels[:, 1:] != IGNORE_INDEX
        rows = torch.arange(n, device=ids.device)
        hard_negative = torch.where(rows ^ 1 < n, rows ^ 1, -1)  # pair layout: rows 2k and 2k+1
        return coin_loss(
            lp[:n],
            response[:n],
            lp[n:],
            response[n:],
            h,
            h_pos,
            tau=self.tau,
            contrastive_weight=self.contrastive_weight,
            h_all=h_all,
            h_pos_all=h_pos_all,
            offset=offset,
            hard_negative=hard_negative,
        )

    def training_step(self, batch: dict, batch_idx: int):
        loss, metrics = self.forward_loss(batch)
        self.check_finite(loss, batch_idx)
        pairs = batch["input_ids"].shape[0] // 2
        self.log("train/loss", loss, prog_bar=True, batch_size=pairs)
        for name in LOGGED[1:]:
            if name in metrics:
                self.log(f"train/{name}", metrics[name], prog_bar=name == "retrieval_acc", batch_size=pairs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "prompt_ids" in batch:
            self.eval_step(batch)
            return
        loss, metrics = self.forward_loss(batch)
        metrics["loss"] = loss
        pairs = batch["input_ids"].shape[0] // 2
        for name in LOGGED:  # retrieval among eval_batch_size candidates: keep it fixed to compare runs
            if name in metrics:
                self.val_metrics[name].update(metrics[name], pairs)
                self.log(f"val/{name}", self.val_metrics[name], add_dataloader_idx=False)
