"""DataModules: task formats and data-selection strategies (installed as ``ltune.datamodules``)."""

from ltune.datamodules.base import LTuneData
from ltune.datamodules.formats import CritiqueData, InstructionData, PromptData
from ltune.datamodules.judgment import JudgmentData
from ltune.datamodules.paraphrase import ParaphraseData
from ltune.datamodules.preference import PreferenceData
from ltune.datamodules.sources import DataError, Files, Hub, Source
from ltune.datamodules.tasks import EmbeddedTasks

__all__ = [
    "CritiqueData",
    "DataError",
    "EmbeddedTasks",
    "Files",
    "Hub",
    "InstructionData",
    "JudgmentData",
    "LTuneData",
    "ParaphraseData",
    "PreferenceData",
    "PromptData",
    "Source",
]
from ltune.datamodules.pairwise import PairwiseData  # noqa: E402

__all__ += ["PairwiseData"]
from ltune.datamodules.selection import DEITA, IFD, LESS, LIMA, IFDPreExperience, MoDS, Selection, Subset  # noqa: E402

__all__ += ["DEITA", "IFD", "IFDPreExperience", "LESS", "LIMA", "MoDS", "Selection", "Subset"]
