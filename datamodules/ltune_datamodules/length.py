"""The length policy of every format (``overlong``), as pure functions on token lists.

With ``"truncate_prompt"`` a row longer than ``max_length`` tokens loses tokens from the left of its prompt (a
conversation: from the left of the turns after its system message, which stays); a row whose completion alone does
not fit is skipped. With ``"keep_start"`` a conversation or text row loses its end (a prompt/completion pair is cut as
under ``"truncate_prompt"``). With ``"skip"`` every over-long row is skipped. A row left with no trained token is
skipped. The DataModule counts truncated and skipped rows and logs them per split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ltune.kernels import IGNORE_INDEX

Policy = Literal["truncate_prompt", "keep_start", "skip"]


class Overlong(Exception):
    """Raised by ``encode`` for a row that the length policy skips."""


def cut_prompt(prompt: list[int], completion_len: int, max_length: int, policy: Policy) -> tuple[list[int], bool]:
    """``prompt`` cut from the left so that a completion of ``completion_len`` tokens fits, and whether it was cut;
    raises :class:`Overlong` for a row to skip."""
    excess = len(prompt) + completion_len - max_length
    if excess <= 0:
        return prompt, False
    if policy == "skip" or completion_len >= max_length:
        raise Overlong
    return prompt[excess:], True


def cut_sequence(
    ids: list[int], labels: list[int], max_length: int, policy: Policy, keep: Callable[[], int] = lambda: 0
) -> tuple[list[int], list[int], bool]:
    """``ids``/``labels`` within ``max_length`` (``keep()``: leading tokens never cut), and whether they were cut;
    raises :class:`Overlong` for a row to skip."""
    excess = len(ids) - max_length
    if excess <= 0:
        return ids, labels, False
    if policy == "skip":
        raise Overlong
    if policy == "keep_start":
        ids, labels = ids[:max_length], labels[:max_length]
    else:
        k = keep()
        if k + excess >= len(ids):
            raise Overlong
        ids, labels = ids[:k] + ids[k + excess :], labels[:k] + labels[k + excess :]
    if all(t == IGNORE_INDEX for t in labels):
        raise Overlong
    return ids, labels, True
