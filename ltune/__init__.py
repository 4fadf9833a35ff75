"""ltune: composable Lightning pieces for fine-tuning language models."""

from ltune.objectives import CUT, GRPO, ORPO, RLAIF, RLSC, SFT, TTRL, CoIN, Objective, RewardModel

__version__ = "0.1.0"
__all__ = ["CUT", "GRPO", "ORPO", "RLAIF", "RLSC", "SFT", "TTRL", "CoIN", "Objective", "RewardModel", "__version__"]
