"""TTRL: GRPO rewarded by agreement with the majority answer of the model's own samples; no labels used.

ltune fit --config configs/objectives/ttrl.yaml
"""

from __future__ import annotations

import torch
from torch import Tensor

from ltune.metrics import pass_at_k
from ltune.objectives.grpo import GRPO
from ltune.rewards import answer_groups, is_equivalent, majority_vote


def majority_rewards(answers: list[str | None]) -> tuple[list[float], str | None, float]:
    """TTRL's pseudo-reward of one prompt: 1 for each answer equivalent to the majority answer, else 0.

    Returns:
        The rewards, the majority answer (``None`` when no sample has an answer) and its share of the samples.
    """
    label, ratio = majority_vote(answers)
    return [float(is_equivalent(a, label)) for a in answers], label, ratio


class TTRL(GRPO):
    """Test-Time Reinforcement Learning (Zuo et al., 2025, arXiv:2504.16084): vote-then-sample GRPO.

    Each step samples ``num_votes`` completions per prompt, takes the majority answer (counted over equivalence
    classes, ``ltune.rewards.majority_vote``) as the pseudo-label, rewards each completion 1 if its answer is
    equivalent to it, and updates on the first ``num_generations`` of them (advantages normalised within those).
    A reference ``answer``, when present in the rows, feeds only the metrics (``train/`` prefix): ``label_accuracy``
    (maj@N), ``reward_accuracy`` (pseudo-reward equals the true reward), ``majority_ratio``,
    ``ground_truth_ratio``, ``pass@N``, and ``post_ground_truth_ratio`` over the kept samples;
    ``majority_voting_reward`` is logged always. The reference TTRL scripts use ``num_votes=64``,
    ``num_generations=32``, temperature 1.0, token-mean loss (``bnpo``/``dapo``), ``beta=0.001``, lr 5e-7.

    Args:
        num_votes: Samples per prompt for the vote (N_vote >= ``num_generations``).
        placebo: The control of issue 16: each prompt's pseudo-rewards are shuffled among its samples (a random
            permutation within the group), so every step has TTRL's reward counts and advantages' spread, but the
            reward no longer says which sample agrees with the majority.
        **kwargs: Arguments of :class:`~ltune.objectives.grpo.GRPO` (``num_generations`` is N_train).
    """

    def __init__(self, num_votes: int = 16, placebo: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_votes < self.num_generations:
            raise ValueError(
                f"num_votes={num_votes} must be >= num_generations={self.num_generations}: "
                "the update uses a subset of the voting samples"
            )
        self.num_votes, self.placebo = num_votes, placebo

    @property
    def num_rollouts(self) -> int:
        return self.num_votes

    def rewards(self, texts: list[str], batch: dict, samples=None) -> tuple[Tensor, dict[str, float]]:
        n, g = self.num_votes, self.num_generations
        rewards: list[float] = []
        stats: dict[str, list[float]] = {}
        for group, truth in answer_groups(texts, n, batch.get("answer") or [None] * len(batch["prompt_ids"])):
            pseudo, label, ratio = majority_rewards(group)
            if self.placebo:
                pseudo = [pseudo[j] for j in torch.randperm(n).tolist()]
            rewards += pseudo
            stats.setdefault("majority_ratio", []).append(ratio)
            stats.setdefault("majority_voting_reward", []).append(sum(pseudo) / n)
            if truth is None:  # label-free: nothing below is computable, nothing of it enters the reward
                continue
            true = [float(is_equivalent(a, truth)) for a in group]
            stats.setdefault("label_accuracy", []).append(float(is_equivalent(label, truth)))
            stats.setdefault("reward_accuracy", []).append(sum(p == t for p, t in zip(pseudo, true)) / n)
            stats.setdefault("ground_truth_ratio", []).append(sum(true) / n)
            stats.setdefault(f"pass@{n}", []).append(pass_at_k(n, int(sum(true)), n))
            stats.setdefault("post_ground_truth_ratio", []).append(sum(true[:g]) / g)
        return torch.tensor(rewards), {k: sum(v) / len(v) for k, v in stats.items()}
