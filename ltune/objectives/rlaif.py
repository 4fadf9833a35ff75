"""RLAIF: the policy gradient rewarded by a reward model trained on AI labels, or directly by an LM judge (d-RLAIF).

ltune fit --config configs/objectives/rlaif.yaml          # reward model checkpoint from rlaif_reward_model.yaml
ltune fit --config configs/objectives/rlaif_direct.yaml   # an LM judge's 1-10 rating as the reward
"""

from __future__ import annotations

import torch
from torch import Tensor

from ltune.generation import training_inputs
from ltune.judges import LMJudge
from ltune.objectives.grpo import GRPO
from ltune.objectives.reward_model import RewardModel


class RLAIF(GRPO):
    """Reinforcement Learning from AI Feedback (Lee et al., 2023, arXiv:2309.00267) on the GRPO update.

    The paper maximises E[r(x, y)] - beta KL(pi || pi_SFT) with an on-policy policy gradient; here the gradient is
    GRPO's (group baseline; ``beta`` adds the k3 KL to the reference, the starting model). The reward is one of:

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
        if (reward_model is None) == (judge is None):
            raise ValueError("RLAIF needs exactly one reward: reward_model (a checkpoint path) or judge (direct RLAIF)")
        self.reward_model_path, self.judge = reward_model, judge
        self._scorer: list[RewardModel] = []  # kept out of the module tree: frozen, not saved with the policy

    def configure_model(self) -> None:
        super().configure_model()
        if self.judge is not None:
            self.judge.bind(self.backbone)  # no judge backbone given: the policy's starting checkpoint judges
        if self.reward_model_path and not self._scorer:
            rm = (
                RewardModel.load_from_checkpoint(self.reward_model_path, map_location="cpu")
                .eval()
                .requires_grad_(False)
            )
            probe = "Q: 12+30?\nA: 42"
            if rm.tokenizer(probe)["input_ids"] != self.tokenizer(probe)["input_ids"]:
                raise ValueError(f"reward model {self.reward_model_path} tokenizes differently from the policy")
            self._scorer.append(rm)

    def rewards(self, texts: list[str], batch: dict, samples=None) -> tuple[Tensor, dict[str, float]]:
        if self._scorer:
            rm = self._scorer[0].to(self.device)
            inputs = training_inputs(samples)
            with torch.no_grad():
                return rm.score(inputs["input_ids"], inputs["attention_mask"]), {}
        prompts = self.tokenizer.batch_decode(batch["prompt_ids"], skip_special_tokens=True)
        prompts = [p for p in prompts for _ in range(self.num_rollouts)]
        return self.judge.score(prompts, texts).to(self.device), {}
