"""Data-selection strategies: each wraps a pool DataModule, scores its rows and keeps a budget."""

from ltune.datamodules.selection.base import Selection, pair_text, resolve_budget
from ltune.datamodules.selection.cache import ScoreCache
from ltune.datamodules.selection.deita import DEITA
from ltune.datamodules.selection.ifd import IFD
from ltune.datamodules.selection.less import LESS
from ltune.datamodules.selection.lima import LIMA
from ltune.datamodules.selection.mods import HFRewardModel, MoDS
from ltune.datamodules.selection.pre_experience import IFDPreExperience
from ltune.datamodules.selection.scoring import SKIPPED, ScoringError
from ltune.datamodules.selection.subset import Subset

__all__ = [
    "DEITA",
    "HFRewardModel",
    "IFD",
    "IFDPreExperience",
    "LESS",
    "LIMA",
    "MoDS",
    "SKIPPED",
    "ScoreCache",
    "ScoringError",
    "Selection",
    "Subset",
    "pair_text",
    "resolve_budget",
]
