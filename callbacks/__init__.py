"""Callbacks: HF export, and later the self-training rounds (installed as ``ltune.callbacks``)."""

from ltune.callbacks.export import HFExport

__all__ = ["HFExport"]
from ltune.callbacks.rounds import Rounds  # noqa: E402

__all__ += ["Rounds"]
from ltune.callbacks.rest_em import ReSTEM  # noqa: E402

__all__ += ["ReSTEM"]
from ltune.callbacks.lion import Lion  # noqa: E402

__all__ += ["Lion"]
from ltune.callbacks.samples import SampleTable  # noqa: E402

__all__ += ["SampleTable"]
