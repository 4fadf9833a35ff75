"""Reward model: a causal LM with a scalar value head, trained by cross-entropy on (soft) pairwise labels.

ltune fit --config configs/objectives/rlaif_reward_model.yaml
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ltune.forward import hidden_states, last_token_states, unwrap
from ltune.losses.reward import soft_pairwise_loss
from ltune.objectives.base import Objective


class RewardModel(Objective):
    """A sequence scorer r(x, y): the backbone's final hidden state at the last real token, through a linear value
    head, trained with ``ltune.losses.reward.soft_pairwise_loss`` on ``PairwiseData`` (RLAIF: the labels are an AI
    judge's soft preferences; Lee et al., 2023, arXiv:2309.00267). Logs ``train/`` and ``val/`` ``loss``,
    ``accuracy`` and ``margin``. ``ltune.RLAIF`` loads the checkpoint as its reward. Arguments are those of
    :class:`~ltune.objectives.base.Objective` (``max_new_tokens`` is unused: a reward model does not generate).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.value_head: nn.Linear | None = None
        self.val_loss, self.val_accuracy, self.val_margin = MeanMetric(), MeanMetric(), MeanMetric()

    def configure_model(self) -> None:
        super().configure_model()
        if self.value_head is None:
            self.value_head = nn.Linear(unwrap(self.model).config.hidden_size, 1)
            nn.init.zeros_(self.value_head.weight)  # start indifferent: r = bias for every sequence
            nn.init.zeros_(self.value_head.bias)

    def score(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B]`` rewards of full sequences (prompt + response), read at each row's last real token (any padding)."""
        pooled = last_token_states(hidden_states(self.model, input_ids, attention_mask), attention_mask)
        return self.value_head(pooled.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def forward_loss(self, batch: dict):
        r_a = self.score(batch["a_input_ids"], batch["a_attention_mask"])
        r_b = self.score(batch["b_input_ids"], batch["b_attention_mask"])
        p = torch.as_tensor(batch["preference"], dtype=torch.float32, device=r_a.device)
        return soft_pairwise_loss(r_a, r_b, p)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, metrics = self.forward_loss(batch)
        self.check_finite(loss, batch_idx)
        bs = len(batch["preference"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "prompt_ids" in batch:
            self.eval_step(batch)
            return
        loss, metrics = self.forward_loss(batch)
        bs = len(batch["preference"])
        self.val_loss.update(loss, bs)
        self.val_accuracy.update(metrics["accuracy"], bs)
        self.val_margin.update(metrics["margin"], bs)
        for name, metric in (("loss", self.val_loss), ("accuracy", self.val_accuracy), ("margin", self.val_margin)):
            self.log(f"val/{name}", metric, add_dataloader_idx=False)
