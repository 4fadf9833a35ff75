"""One LightningModule per training objective."""

from ltune.objectives.base import NonFiniteLossError, Objective
from ltune.objectives.coin import CoIN
from ltune.objectives.cut import CUT
from ltune.objectives.orpo import ORPO
from ltune.objectives.sft import SFT

__all__ = ["CoIN", "CUT", "ORPO", "SFT", "NonFiniteLossError", "Objective"]
from ltune.objectives.policy_gradient import GRPO  # noqa: E402
from ltune.objectives.ttrl import TTRL  # noqa: E402

__all__ += ["GRPO", "TTRL"]
from ltune.objectives.rlsc import RLSC  # noqa: E402

__all__ += ["RLSC"]
from ltune.objectives.reward_model import RewardModel  # noqa: E402
from ltune.objectives.rlaif import RLAIF  # noqa: E402

__all__ += ["RLAIF", "RewardModel"]
