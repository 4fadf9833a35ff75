"""SFT: negative log-likelihood of the completion tokens. Also Critique Fine-Tuning when the data are critiques.

ltune fit --config configs/objectives/sft.yaml
"""

from __future__ import annotations

from torchmetrics import MeanMetric, SumMetric

from ltune.backbone import completion_logprobs
from ltune.kernels import IGNORE_INDEX
from ltune.losses.sft import sft_loss
from ltune.objectives.base import Objective


class SFT(Objective):
    """Supervised fine-tuning on prompt/completion pairs (loss on completion tokens only).

    Critique Fine-Tuning (Wang et al., 2025, arXiv:2501.17703) is this objective on ``CritiqueData``.
    Logs ``train/loss``, ``train/token_accuracy``, ``train/tokens``; on validation ``val/loss``,
    ``val/token_accuracy`` and, with ``eval_prompts``, ``val/exact_match`` (greedy decoding).
    Arguments are those of :class:`~ltune.objectives.base.Objective`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # token-weighted over the whole validation set, reduced exactly across DDP ranks
        self.val_loss, self.val_accuracy, self.val_tokens = MeanMetric(), MeanMetric(), SumMetric()

    def forward_loss(self, batch: dict):
        lp = completion_logprobs(
            self.model, batch["input_ids"], batch["attention_mask"], batch["labels"], with_argmax=True
        )
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
