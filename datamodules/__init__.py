"""DataModules: task formats and data-selection strategies (installed as ``ltune.datamodules``)."""

from ltune.datamodules.base import LTuneData
from ltune.datamodules.formats import CritiqueData, InstructionData, PromptData
from ltune.datamodules.sources import DataError, Files, Hub, Source
from ltune.datamodules.tasks import EmbeddedTasks

__all__ = [
    "CritiqueData",
    "DataError",
    "EmbeddedTasks",
    "Files",
    "Hub",
    "InstructionData",
    "LTuneData",
    "PromptData",
    "Source",
]
