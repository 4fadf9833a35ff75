"""Callbacks (installed as ``ltune.callbacks``): self-training rounds (``Rounds`` and the loops on it: ReST-EM, Lion,
MoDS's necessity stage, Cherry's pre-experienced stage), LESS's warm-up checkpoints, LIMA's residual dropout, W&B
sample tables, the step-counting progress bar, the last checkpoint and the Hugging Face export on train end."""

from ltune.callbacks.best_round import BestRound
from ltune.callbacks.cherry_rounds import CherryPreExperience
from ltune.callbacks.export import HFExport
from ltune.callbacks.last_checkpoint import SaveOnTrainEnd
from ltune.callbacks.less_warmup import LESSWarmup
from ltune.callbacks.lion import Lion
from ltune.callbacks.mods_necessity import MoDSNecessity
from ltune.callbacks.progress import StepProgress
from ltune.callbacks.residual_dropout import ResidualDropout
from ltune.callbacks.rest_em import ReSTEM
from ltune.callbacks.rounds import Rounds
from ltune.callbacks.samples import SampleTable

__all__ = [
    "BestRound",
    "CherryPreExperience",
    "HFExport",
    "LESSWarmup",
    "Lion",
    "MoDSNecessity",
    "ReSTEM",
    "ResidualDropout",
    "Rounds",
    "SampleTable",
    "SaveOnTrainEnd",
    "StepProgress",
]
