"""ORPO: SFT + odds-ratio preference term in one stage, no reference model (Hong et al., 2024, arXiv:2403.07691).

ltune fit --config configs/objectives/orpo.yaml
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from ltune.backbone import completion_logprobs
from ltune.kernels import IGNORE_INDEX, odds_ratio_loss
from ltune.losses.orpo import orpo_loss
from ltune.objectives.base import Objective

VAL_METRICS = (
    "loss",
    "nll_loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "log_odds_ratio",
    "log_odds_chosen",
)


class ORPO(Objective):
    """Odds Ratio Preference Optimization on ``PreferenceData`` batches (chosen and rejected stacked).

    One forward scores the ``2B`` stacked sequences; the odds use the length-normalised log-likelihood of each
    response, the SFT term the chosen sequences. Log-probs and the odds ratio go through :mod:`ltune.kernels`
    (Triton on CUDA, the exact torch path elsewhere; ``$LTUNE_KERNELS`` overrides).

    Logs TRL's ORPO metric names under ``train/`` and ``val/``: ``loss``, ``nll_loss``,
    ``rewards/{chosen,rejected,accuracies,margins}``, ``logps/{chosen,rejected}``, ``log_odds_ratio``,
    ``log_odds_chosen``; ``val/rewards/accuracies`` is the preference accuracy on held-out pairs. TRL's
    ``logits/chosen``/``logits/rejected`` are not logged: the logits are never materialised.

    Args:
        beta: Weight lambda of the odds-ratio term (TRL's ``beta``; 0.1 in the paper's main runs).
        nll_on_prompt: Whether the SFT term also covers the chosen sequence's prompt tokens. ``True`` (default)
            matches the paper's code and TRL (the NLL over prompt + response); ``False`` is the repository's
            ``--disable_prompt_loss`` (response tokens only).
        **kwargs: Arguments of :class:`~ltune.objectives.base.Objective` (backbone, optimizer, scheduler, ...).
    """

    def __init__(
        self,
        beta: float = 0.1,
        nll_on_prompt: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.beta, self.nll_on_prompt = beta, nll_on_prompt
        self.val_metrics = torch.nn.ModuleDict({k.replace("/", "_"): MeanMetric() for k in VAL_METRICS})

    def forward_loss(self, batch: dict):
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        n = ids.shape[0] // 2
        targets = labels
        if self.nll_on_prompt:  # chosen rows: every real token is a target (NLL over prompt + response)
            targets = labels.clone()
            targets[:n] = ids[:n].masked_fill(mask[:n] == 0, IGNORE_INDEX)
        lp = completion_logprobs(self.model, ids, mask, targets).logprobs
        response = labels[:, 1:] != IGNORE_INDEX
        return orpo_loss(
            lp[:n],
            lp[n:],
            response[:n],
            response[n:],
            targets[:n, 1:] != IGNORE_INDEX,
            beta=self.beta,
            odds_ratio=odds_ratio_loss,
        )

    def training_step(self, batch: dict, batch_idx: int):
        loss, metrics = self.forward_loss(batch)
        self.check_finite(loss, batch_idx)
        pairs = batch["input_ids"].shape[0] // 2
        self.log("train/loss", loss, prog_bar=True, batch_size=pairs)
        for name, value in metrics.items():
            self.log(f"train/{name}", value, prog_bar=name == "rewards/accuracies", batch_size=pairs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "prompt_ids" in batch:
            self.eval_step(batch)
            return
        loss, metrics = self.forward_loss(batch)
        metrics["loss"] = loss
        pairs = batch["input_ids"].shape[0] // 2
        for name in VAL_METRICS:  # pair-weighted over the whole validation set, exact across DDP ranks
            metric = self.val_metrics[name.replace("/", "_")]
            metric.update(metrics[name], pairs)
            self.log(f"val/{name}", metric, add_dataloader_idx=False)
