"""Reward functions as a TRL user writes them, used by configs/objectives/grpo.yaml (``examples.rewards.<name>``).

Each takes keyword arguments and returns one value per completion: a number, or None where it does not apply.
Columns of your rows arrive by name (here ``answer``); take ``**kwargs`` for the rest.
"""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number_matches(completions: list, answer: list[str | None], **kwargs) -> list[float | None]:
    """1.0 when the last number in a completion equals the row's answer (GSM8K-style), 0.0 otherwise; None for a
    row without an answer."""
    out = []
    for completion, truth in zip(completions, answer):
        text = completion if isinstance(completion, str) else completion[0]["content"]
        numbers = NUMBER.findall(text)
        out.append(None if truth is None else float(bool(numbers) and float(numbers[-1]) == float(truth)))
    return out
