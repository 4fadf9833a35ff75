"""CUT: learn from negative judgments by unlikelihood on the tokens they single out (Xu et al., 2023,
arXiv:2312.14591, "Reasons to Reject? Aligning Language Models with Judgments").

ltune fit --config configs/objectives/cut.yaml
"""

from __future__ import annotations

from typing import Literal

import torch
from torchmetrics import MeanMetric

from ltune.forward import completion_logprobs
from ltune.kernels import IGNORE_INDEX
from ltune.losses.cut import cut_loss
from ltune.objectives.base import Objective

LOGGED = ("loss", "mle_loss", "misalign_loss", "ul_token_frac", "ratio_mean", "p_flagged")


class CUT(Objective):
    """Contrastive Unlikelihood Training on ``JudgmentData`` batches.

    One forward scores the Align-P/Align-N sequences and the Misalign sequences stacked together; gradients flow
    through both (only the detection ratio is detached). Logs ``train/`` and ``val/`` ``loss``, ``mle_loss``,
    ``misalign_loss``, ``ul_token_frac`` (share of Misalign tokens flagged; training diverges as it nears 1),
    ``ratio_mean`` (mean p(y_t | x, j-) / p(y_t | x)), ``p_flagged`` (mean probability of the flagged tokens
    without the judgment), and per batch the counts ``train/align_p`` and ``train/align_n``.

    Args:
        threshold: lambda of the detection criterion p(y_t | x, j-) / p(y_t | x) > lambda (1.1 in the code).
        weighting: ``"paper"``: unlikelihood weight alpha * p(y_t | x, j-)^gamma (paper Eq. 6); ``"constant"``:
            the released code's constant weight alpha.
        alpha: Scale of the unlikelihood weight.
        gamma: Exponent of the paper's dynamic weight.
        **kwargs: Arguments of :class:`~ltune.objectives.base.Objective` (backbone, optimizer, scheduler, ...).
    """

    def __init__(
        self,
        threshold: float = 1.1,
        weighting: Literal["paper", "constant"] = "paper",
        alpha: float = 1.0,
        gamma: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.threshold, self.weighting, self.alpha, self.gamma = threshold, weighting, alpha, gamma
        self.val_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in LOGGED})

    def response_logprobs(self, batch: dict):
        """One forward over the stacked batch: per-token log-probs ``[B, T-1]``, the response-token mask, and the
        number of Align-P/Align-N rows (the Misalign copies of ``negative_rows`` follow them, in that order)."""
        ids, labels = batch["input_ids"], batch["labels"]
        lp = completion_logprobs(self.model, ids, batch["attention_mask"], labels).logprobs
        return lp, labels[:, 1:] != IGNORE_INDEX, ids.shape[0] - len(batch["negative_rows"])

    def forward_loss(self, batch: dict):
        ids, negative_rows = batch["input_ids"], batch["negative_rows"]
        lp, response, n_first = self.response_logprobs(batch)
        first, first_mask = lp[:n_first], response[:n_first]
        neg = torch.as_tensor(negative_rows, dtype=torch.long, device=ids.device)
        judged = first[neg][first_mask[neg]]  # Align-N tokens, row-major: the same order as the Misalign tokens
        misaligned = lp[n_first:][response[n_first:]]
        if judged.shape != misaligned.shape:
            raise RuntimeError("Align-N and Misalign responses differ in length; JudgmentData keeps them identical")
        return cut_loss(
            first[first_mask],
            judged,
            misaligned,
            threshold=self.threshold,
            weighting=self.weighting,
            alpha=self.alpha,
            gamma=self.gamma,
        )

    def training_step(self, batch: dict, batch_idx: int):
        loss, metrics = self.forward_loss(batch)
        self.check_finite(loss, batch_idx)
        rows, negatives = len(batch["category"]), len(batch["negative_rows"])
        self.log("train/loss", loss, prog_bar=True, batch_size=rows)
        for name in LOGGED[1:]:
            self.log(f"train/{name}", metrics[name], batch_size=rows)
        self.log("train/align_p", float(rows - negatives), batch_size=rows)
        self.log("train/align_n", float(negatives), batch_size=rows)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "prompt_ids" in batch:
            self.eval_step(batch)
            return
        loss, metrics = self.forward_loss(batch)
        metrics["loss"] = loss
        for name in LOGGED:  # token-level ratios weighted by the Misalign tokens, losses by rows
            weight = metrics["misaligned_tokens"] if name in ("ul_token_frac", "ratio_mean") else len(batch["category"])
            if name == "p_flagged":
                weight = metrics["ul_token_frac"] * metrics["misaligned_tokens"]
            self.val_metrics[name].update(metrics[name], weight)
            self.log(f"val/{name}", self.val_metrics[name], add_dataloader_idx=False)
