"""One LightningModule per training objective."""

from ltune.objectives.base import NonFiniteLossError, Objective
from ltune.objectives.sft import SFT

__all__ = ["SFT", "NonFiniteLossError", "Objective"]
