"""One LightningModule per training objective; ``Objective`` is what they share."""

from ltune.objectives.base import NonFiniteLossError, Objective
from ltune.objectives.checkpoint import CheckpointMismatch
from ltune.objectives.coin import CoIN
from ltune.objectives.cut import CUT
from ltune.objectives.dpo import DPO, SimPO
from ltune.objectives.grpo import GRPO
from ltune.objectives.kto import KTO
from ltune.objectives.orpo import ORPO
from ltune.objectives.reward_model import RewardModel
from ltune.objectives.rlaif import RLAIF
from ltune.objectives.rlsc import RLSC
from ltune.objectives.sft import SFT
from ltune.objectives.ttrl import TTRL
from ltune.reward_funcs import RewardError  # raised by the GRPO family's reward calls

__all__ = [
    "CUT",
    "CheckpointMismatch",
    "DPO",
    "GRPO",
    "KTO",
    "ORPO",
    "RLAIF",
    "RLSC",
    "SFT",
    "SimPO",
    "TTRL",
    "CoIN",
    "NonFiniteLossError",
    "Objective",
    "RewardError",
    "RewardModel",
]
