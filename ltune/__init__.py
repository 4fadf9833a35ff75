"""ltune: composable Lightning pieces for fine-tuning language models."""

__version__ = "0.1.0"

from ltune.objectives import (  # noqa: E402
    CUT,
    GRPO,
    ORPO,
    RLAIF,
    RLSC,
    SFT,
    TTRL,
    CoIN,
    Objective,
    RewardModel,
)

__all__ = ["CUT", "GRPO", "ORPO", "RLAIF", "RLSC", "SFT", "TTRL", "CoIN", "Objective", "RewardModel", "__version__"]
