"""ltune: composable Lightning pieces for fine-tuning language models."""

__version__ = "0.1.0"

from ltune.objectives import SFT, Objective  # noqa: E402

__all__ = ["SFT", "Objective", "__version__"]
from ltune.objectives import GRPO, TTRL  # noqa: E402

__all__ += ["GRPO", "TTRL"]
from ltune.objectives import RLSC  # noqa: E402

__all__ += ["RLSC"]
