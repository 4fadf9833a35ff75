"""SFT: negative log-likelihood of the completion tokens. Also Critique Fine-Tuning when the data are critiques.

ltune fit --config configs/objectives/sft.yaml
"""

from __future__ import annotations

import warnings

from torchmetrics import MeanMetric, SumMetric

from ltune.kernels import IGNORE_INDEX
from ltune.losses.sft import sft_loss
from ltune.objectives.base import Objective
from ltune.packing import grouped_logprobs, row_groups


class SFT(Objective):
    """Supervised fine-tuning on prompt/completion pairs (loss on completion tokens only).

    Critique Fine-Tuning (Wang et al., 2025, arXiv:2501.17703) is this objective on ``CritiqueData``.
    Logs ``train/loss``, ``train/token_accuracy``, ``train/tokens``; on validation ``val/loss``,
    ``val/token_accuracy`` and, with ``eval_prompts``, ``val/exact_match`` (greedy decoding).

    Args:
        packing: Run the batch's rows as few sequences, packed best-fit-decreasing around the prefix every row
            repeats (the chat template and system prompt), each row attending to itself only: exact (the loss, token
            counts and gradients of the unpacked rows), no padding through the decoder, and only when it saves at
            least 10% of the forward's FLOPs (:mod:`ltune.packing`). False runs the padded rows as they are.
        pack_length: Tokens per packed sequence; None: the batch's longest row, or longer when the rows share a
            prefix, as the cost model in :func:`ltune.packing.row_groups` picks.
        **kwargs: Arguments of :class:`~ltune.objectives.base.Objective` (backbone, optimizer, scheduler, ...).
    """

    def __init__(self, *args, packing: bool = True, pack_length: int | None = None, **kwargs) -> None:
        old = kwargs.pop("share_prefix_rows", None)  # in the hparams of checkpoints saved before 2026-12-03
        if old is not None:
            warnings.warn("SFT's share_prefix_rows is gone: rows are packed by `packing` (on by default)", stacklevel=2)
        super().__init__(*args, **kwargs)
        if pack_length is not None and pack_length < 1:
            raise ValueError(f"pack_length={pack_length} must be >= 1 (or null: chosen per batch)")
        self.packing, self.pack_length = packing, pack_length
        # token-weighted over the whole validation set, reduced exactly across DDP ranks
        self.val_loss, self.val_accuracy, self.val_tokens = MeanMetric(), MeanMetric(), SumMetric()

    def forward_loss(self, batch: dict):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        groups = row_groups(self.model, ids, mask, self.pack_length) if self.packing and len(ids) > 1 else None
        lp = grouped_logprobs(self.model, ids, mask, batch["labels"], groups, with_argmax=True)
        return sft_loss(lp.logprobs, batch["labels"][:, 1:] != IGNORE_INDEX, lp.argmax_hit)

    def training_step(self, batch: dict, batch_idx: int):
        loss, metrics = self.forward_loss(batch)
        self.check_finite(loss, batch_idx)
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/token_accuracy", metrics["token_accuracy"], batch_size=bs)
        self.log("train/tokens", metrics["tokens"], reduce_fx="sum", batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "prompt_ids" in batch:
            self.eval_step(batch)
            return
        loss, metrics = self.forward_loss(batch)
        n = metrics["tokens"]
        self.val_loss.update(loss, n)
        self.val_accuracy.update(metrics["token_accuracy"], n)
        self.val_tokens.update(n)
        for name, metric in (
            ("loss", self.val_loss),
            ("token_accuracy", self.val_accuracy),
            ("tokens", self.val_tokens),
        ):
            self.log(f"val/{name}", metric, add_dataloader_idx=False)
