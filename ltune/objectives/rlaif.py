"""RLAIF: the policy gradient rewarded by a reward model trained on AI labels, or directly by an LM judge (d-RLAIF).

ltune fit --config configs/objectives/rlaif.yaml          # reward model checkpoint from rlaif_reward_model.yaml
ltune fit --config configs/objectives/rlaif_direct.yaml   # an LM judge's 1-10 rating as the reward
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from ltune.judges import LMJudge
from ltune.objectives.grpo import GRPO
from ltune.objectives.reward_model import RewardModel
from ltune.reward_funcs import RewardFunc, completion_text


class RewardModelScore:
    """A reward function: a ``ltune.RewardModel`` checkpoint's score of prompt + completion tokens. It must share the
    policy's tokenizer (checked when bound).

    Args:
        checkpoint: Path of the ``RewardModel`` checkpoint (``configs/objectives/rlaif_reward_model.yaml``).
    """

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint
        self.model: RewardModel | None = None
        self.objective = None

    def bind(self, objective) -> None:
        rm = RewardModel.load_from_checkpoint(self.checkpoint, map_location="cpu").eval().requires_grad_(False)
        probe = "Q: 12+30?\nA: 42"
        if rm.tokenizer(probe)["input_ids"] != objective.tokenizer(probe)["input_ids"]:
            raise ValueError(f"reward model {self.checkpoint} tokenizes differently from the policy")
        self.model, self.objective = rm, objective

    def __call__(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        device = self.objective.device
        seqs = [torch.tensor(p + c) for p, c in zip(prompt_ids, completion_ids)]
        ids = pad_sequence(seqs, batch_first=True, padding_value=self.objective.tokenizer.pad_token_id)
        mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True)
        with torch.no_grad():
            return self.model.to(device).score(ids.to(device), mask.to(device)).tolist()


class JudgeScore:
    """A reward function: an ``ltune.judges.LMJudge``'s expected 1-10 rating of each completion to its prompt,
    rescaled to [-1, 1] (d-RLAIF). A judge given no backbone judges with the policy's starting checkpoint.

    Args:
        judge: The judge.
    """

    def __init__(self, judge: LMJudge) -> None:
        self.judge = judge

    def bind(self, objective) -> None:
        self.judge.bind(objective.backbone)

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        questions = [
            p if isinstance(p, str) else "\n".join(m["content"] for m in p if m["role"] != "system") for p in prompts
        ]
        return self.judge.score(questions, [completion_text(c) for c in completions]).tolist()


class RLAIF(GRPO):
    """Reinforcement Learning from AI Feedback (Lee et al., 2023, arXiv:2309.00267) on the GRPO update.

    The paper maximises E[r(x, y)] - beta KL(pi || pi_SFT) with an on-policy policy gradient; here the gradient is
    GRPO's (group baseline; ``beta`` adds the k3 KL to the reference, the starting model). The reward is one of
    these reward functions (:class:`RewardModelScore`, :class:`JudgeScore`), built from the arguments below, or any
    ``reward_funcs``:

    * ``reward_model``: a ``ltune.RewardModel`` checkpoint (trained on the AI judge's soft labels), scoring the
      prompt + completion tokens; it must share the policy's tokenizer.
    * ``judge``: direct RLAIF: an ``ltune.judges.LMJudge``'s expected 1-10 rating rescaled to [-1, 1]
      (the judge may be the policy's own starting checkpoint: self-rewarding).

    Args:
        reward_model: Path of a ``RewardModel`` checkpoint.
        judge: LM judge for direct RLAIF.
        **kwargs: Arguments of :class:`~ltune.objectives.grpo.GRPO`.
    """

    def __init__(self, reward_model: str | None = None, judge: LMJudge | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        given = (reward_model is not None) + (judge is not None) + (kwargs.get("reward_funcs") is not None)
        if given != 1:
            raise ValueError(
                "RLAIF needs exactly one reward: reward_model (a checkpoint path), judge (direct RLAIF) or reward_funcs"
            )
        self.reward_model_path, self.judge = reward_model, judge

    def default_rewards(self) -> list[RewardFunc]:
        if self.reward_model_path:
            return [RewardModelScore(self.reward_model_path)]
        return [JudgeScore(self.judge)]
