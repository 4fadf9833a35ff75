"""TTRL: GRPO rewarded by agreement with the majority answer of the model's own samples; no labels used.

ltune fit --config configs/objectives/ttrl.yaml
"""

from __future__ import annotations

from ltune.objectives.grpo import GRPO
from ltune.reward_funcs import MajorityVote, RewardFunc


class TTRL(GRPO):
    """Test-Time Reinforcement Learning (Zuo et al., 2025, arXiv:2504.16084): vote-then-sample GRPO.

    Each step samples ``num_votes`` completions per prompt, takes the majority answer (counted over equivalence
    classes, ``ltune.rewards.majority_vote``) as the pseudo-label, rewards each completion 1 if its answer is
    equivalent to it, and updates on the first ``num_generations`` of them (advantages normalised within those).
    The reward is :class:`ltune.reward_funcs.MajorityVote`, an ordinary entry of ``reward_funcs`` (the default here;
    a ``reward_funcs`` list replaces it: list ``ltune.reward_funcs.MajorityVote`` in it to keep the vote; ``placebo``
    acts on the default only). A reference ``answer``, when present in the rows, feeds only its
    metrics (``train/`` prefix): ``label_accuracy`` (maj@N), ``reward_accuracy``, ``majority_ratio``,
    ``ground_truth_ratio``, ``pass@N`` and ``post_ground_truth_ratio``; ``majority_voting_reward`` is logged always.
    The reference TTRL scripts use ``num_votes=64``, ``num_generations=32``, temperature 1.0, token-mean loss
    (``bnpo``/``dapo``), ``beta=0.001``, lr 5e-7.

    Args:
        num_votes: Samples per prompt for the vote (N_vote >= ``num_generations``).
        placebo: A matched control: each prompt's pseudo-rewards are shuffled among its samples (a random
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

    def default_rewards(self) -> list[RewardFunc]:
        return [MajorityVote(placebo=self.placebo, kept=self.num_generations)]
