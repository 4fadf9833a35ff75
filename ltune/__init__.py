"""ltune: composable Lightning pieces for fine-tuning language models."""

__version__ = "0.1.0"

from ltune.objectives import CUT, CoIN, ORPO, SFT, Objective  # noqa: E402

__all__ = ["CoIN", "CUT", "ORPO", "SFT", "Objective", "__version__"]
from ltune.objectives import GRPO, TTRL  # noqa: E402

__all__ += ["GRPO", "TTRL"]
from ltune.objectives import RLSC  # noqa: E402

__all__ += ["RLSC"]
from ltune.objectives import RLAIF, RewardModel  # noqa: E402

__all__ += ["RLAIF", "RewardModel"]
