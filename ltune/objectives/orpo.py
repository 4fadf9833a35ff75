"""ORPO: SFT + odds-ratio preference term in one stage, no reference model (Hong et al., 2024, arXiv:2403.07691).

ltune fit --config configs/objectives/orpo.yaml
"""

from __future__ import annotations

from ltune.kernels import IGNORE_INDEX, odds_ratio_loss
from ltune.losses.orpo import orpo_loss
from ltune.objectives.preference import PAIR_METRICS, PairObjective


class ORPO(PairObjective):
    """Odds Ratio Preference Optimization on ``PreferenceData`` batches (chosen and rejected stacked).

    One forward scores the ``2B`` stacked sequences (each pair's two rows packed around their shared prompt unless
    ``share_prompt`` is off); the odds use the length-normalised log-likelihood of each response, the SFT term the
    chosen sequences. Log-probs and the odds ratio go through :mod:`ltune.kernels`
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

    val_names = (*PAIR_METRICS, "nll_loss", "log_odds_ratio", "log_odds_chosen")

    def __init__(
        self,
        beta: float = 0.1,
        nll_on_prompt: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.beta, self.nll_on_prompt = beta, nll_on_prompt

    def forward_loss(self, batch: dict):
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        n = ids.shape[0] // 2
        targets = labels
        if self.nll_on_prompt:  # chosen rows: every real token is a target (NLL over prompt + response)
            targets = labels.clone()
            targets[:n] = ids[:n].masked_fill(mask[:n] == 0, IGNORE_INDEX)
        lp = self.pair_logprobs(self.model, batch, targets)
        response = self.response_mask(batch)
        return orpo_loss(
            lp[:n],
            lp[n:],
            response[:n],
            response[n:],
            targets[:n, 1:] != IGNORE_INDEX,
            beta=self.beta,
            odds_ratio=odds_ratio_loss,
        )
