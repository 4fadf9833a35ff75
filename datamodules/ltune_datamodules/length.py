"""The length policy of every format (``overlong``), as pure functions on token lists.

With ``"truncate_prompt"`` a row longer than ``max_length`` tokens loses tokens from the left of its prompt (a
conversation: from the left of the turns after its system message, which stays); a row whose completion alone does
not fit is skipped. With ``"keep_start"`` a row loses its end: a conversation's or text's last tokens, the last
tokens of a prompt/completion's completion (or of a pair's two responses). With ``"skip"`` every over-long row is
skipped. A row left with no trained token is skipped. The DataModule counts truncated and skipped rows and logs
them per split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ltune.kernels import IGNORE_INDEX

Policy = Literal["truncate_prompt", "keep_start", "skip"]


class Overlong(Exception):
    """Raised by ``encode`` for a row that the length policy skips."""


def cut_pair(
    prompt: list[int], completions: list[list[int]], max_length: int, policy: Policy
) -> tuple[list[int], list[list[int]], bool]:
    """A prompt and its completions (one, or a pair's two, which share the prompt) within ``max_length`` each, and
    whether they were cut: ``"truncate_prompt"`` drops the prompt's first tokens (the same ones for every completion),
    ``"keep_start"`` the completions' last tokens; raises :class:`Overlong` for a row to skip."""
    longest = max(len(c) for c in completions)
    excess = len(prompt) + longest - max_length
    if excess <= 0:
        return prompt, completions, False
    if policy == "skip" or (policy == "keep_start" and len(prompt) >= max_length):
        raise Overlong
    if policy == "keep_start":
        cut = [c[: max_length - len(prompt)] for c in completions]
        if len(cut) > 1 and all(c == cut[0] for c in cut):  # a pair cut back to one response teaches nothing
            raise Overlong
        return prompt, cut, True
    if longest >= max_length:
        raise Overlong
    return prompt[excess:], completions, True


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
