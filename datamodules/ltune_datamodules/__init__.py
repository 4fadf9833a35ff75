"""DataModules (installed as ``ltune.datamodules``): task formats (instruction, critique, prompts, preference, pairwise,
judgment, paraphrase), data sources, the embedded verifiable tasks, and the data-selection strategies."""

from ltune.datamodules.base import LTuneData
from ltune.datamodules.formats import CritiqueData, InstructionData, PromptData, UnpairedPreferenceData
from ltune.datamodules.judgment import JudgmentData
from ltune.datamodules.pairwise import PairwiseData
from ltune.datamodules.paraphrase import ParaphraseData
from ltune.datamodules.preference import PreferenceData
from ltune.datamodules.selection import (
    DEITA,
    IFD,
    LESS,
    LIMA,
    SKIPPED,
    IFDPreExperience,
    MoDS,
    ScoringError,
    Selection,
    Subset,
    pair_text,
    resolve_budget,
)
from ltune.datamodules.sources import DataError, Files, Hub, Source, SourceLike, as_source
from ltune.datamodules.tasks import EmbeddedTasks
from ltune.datamodules.unpaired import MaybeUnpaired

__all__ = [
    "SKIPPED",
    "CritiqueData",
    "DEITA",
    "DataError",
    "EmbeddedTasks",
    "Files",
    "Hub",
    "IFD",
    "IFDPreExperience",
    "InstructionData",
    "JudgmentData",
    "LESS",
    "LIMA",
    "LTuneData",
    "MaybeUnpaired",
    "MoDS",
    "PairwiseData",
    "ParaphraseData",
    "PreferenceData",
    "PromptData",
    "ScoringError",
    "Selection",
    "Source",
    "SourceLike",
    "Subset",
    "UnpairedPreferenceData",
    "as_source",
    "pair_text",
    "resolve_budget",
]
