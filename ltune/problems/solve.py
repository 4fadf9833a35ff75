"""Solving a question of the embedded tasks from its text: an oracle for judges that also reads questions no generator
drew (a model's new instructions), in any phrasing of :data:`ltune.problems.PHRASINGS`."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

from ltune.problems.generate import PHRASINGS

_FIELDS = {"a": r"\d+", "b": r"\d+", "x": r"\d+(?:\.\d+)?", "y": r"\d+(?:\.\d+)?", "w": "[a-z]+",
           "terms": r"(?:\d+, )*\d+ and \d+", "plus": r"(?:\d+\+)+\d+"}  # fmt: skip
_ANSWERS: dict[str, Callable[..., str]] = {
    "add": lambda a, b: str(int(a) + int(b)),
    "sub": lambda a, b: str(int(a) - int(b)),
    "mul": lambda a, b: str(int(a) * int(b)),
    "compare": lambda x, y: x if Decimal(x) > Decimal(y) else y,
    "sum": lambda terms=None, plus=None: str(sum(int(t) for t in re.findall(r"\d+", terms or plus))),
    "reverse": lambda w: w[::-1],
    "sort": lambda w: "".join(sorted(w)),
}


def _pattern(phrasing: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", phrasing)  # literal, field, literal, field, ..., literal
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})" for i, p in enumerate(parts)))


_SOLVERS = [(_pattern(phrasing), _ANSWERS[c]) for c, phrasings in PHRASINGS.items() for phrasing in phrasings]


def solve(question: str) -> str | None:
    """The answer of a question written in any phrasing of the embedded tasks, computed from its text alone, so it
    also answers questions that a model wrote (Lion's new instructions); None when the text matches no phrasing.

    Example: ``solve("Add up 3, 12 and 7.") == "22"``; ``solve("Write kcab backwards.") == "back"``.
    """
    text = question.strip()
    for pattern, fn in _SOLVERS:
        if m := pattern.fullmatch(text):
            return fn(**m.groupdict())
    return None
