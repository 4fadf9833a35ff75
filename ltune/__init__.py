"""ltune: composable Lightning pieces for fine-tuning language models."""

from ltune.objectives import CUT, DPO, GRPO, KTO, ORPO, RLAIF, RLSC, SFT, TTRL, CoIN, Objective, RewardModel, SimPO

__version__ = "0.1.0"
__all__ = [
    "CUT",
    "DPO",
    "GRPO",
    "KTO",
    "ORPO",
    "RLAIF",
    "RLSC",
    "SFT",
    "TTRL",
    "CoIN",
    "Objective",
    "RewardModel",
    "SimPO",
    "__version__",
]
