"""The generator of the embedded problems: categories, phrasings, difficulties, disjoint splits (see the package
docstring)."""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

CATEGORIES: tuple[str, ...] = ("add", "sub", "mul", "compare", "reverse", "sort")
# Categories drawn only when named (not in the default mix): "sum" adds 3-4 numbers through a running-sum trace
# whose order is drawn per problem, so a model's samples can reach the answer along different paths.
TRACE_CATEGORIES: tuple[str, ...] = ("sum",)
DIFFICULTIES: tuple[int, ...] = (1, 2, 3)
# Hash buckets (out of 100) of each split: 80% train, 10% val, 10% test.
_SPLIT_BUCKETS: dict[str, tuple[int, int]] = {"train": (0, 80), "val": (80, 90), "test": (90, 100)}
_LETTERS = string.ascii_lowercase
_NUMBER_RANGE = {1: (0, 20), 2: (10, 99), 3: (100, 999)}  # operand ranges of add/sub
_WORD_LENGTHS = {1: (3,), 2: (4, 5), 3: (6, 7, 8)}  # word lengths of reverse/sort
_SUM_TERMS = {1: (3, (1, 20)), 2: (4, (1, 30)), 3: (4, (10, 99))}  # number of terms and their range for sum
# Fractional parts without a trailing zero, so that decimals are written canonically ("3.5", "3.45").
_FRACTIONS = tuple(str(i) for i in range(1, 10)) + tuple(f"{i:02d}" for i in range(1, 100) if i % 10)


# Phrasings of each category, the first being the canonical question; ``solve`` (solve.py) reads them back.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "add": ("What is {a}+{b}?", "Compute {a}+{b}.", "Add {a} and {b}.", "Find the sum of {a} and {b}."),
    "sub": ("What is {a}-{b}?", "Compute {a}-{b}.", "Subtract {b} from {a}.", "What is {a} minus {b}?"),
    "mul": ("What is {a}*{b}?", "Compute {a}*{b}.", "Multiply {a} by {b}.", "What is {a} times {b}?"),
    "compare": ("Which is larger, {x} or {y}?", "What is max({x},{y})?", "Give the bigger number: {x} or {y}.",
                "Pick the larger of {x} and {y}."),
    "sum": ("What is the sum of {terms}?", "Add up {terms}.", "Compute {plus}.", "Find the total of {terms}."),
    "reverse": ("Reverse the letters of {w}.", "Write {w} backwards.", "Spell {w} in reverse.",
                "What is {w} reversed?"),
    "sort": ("Sort the letters of {w}.", "Put the letters of {w} in alphabetical order.",
             "Arrange the letters {w} alphabetically.", "What is {w} sorted?"),
}  # fmt: skip


def _phrase(category: str, **fields: object) -> tuple[str, ...]:
    return tuple(t.format(**fields) for t in PHRASINGS[category])


@dataclass(frozen=True)
class Problem:
    """One verifiable problem.

    Attributes:
        category: Task family, one of ``CATEGORIES`` or ``TRACE_CATEGORIES``.
        difficulty: 1 (easy) to 3 (hard).
        question: Canonical instruction, e.g. ``"What is 23+58?"``.
        answer: Final answer, e.g. ``"81"``.
        solution: Worked response ending with the answer sentence, e.g. ``"23+58=81. The answer is 81."``.
        paraphrases: Alternative phrasings of ``question`` with the same answer (at least 3).
        expression: The worked part before ``=`` in ``solution``, e.g. ``"23+58"``.
    """

    category: str
    difficulty: int
    question: str
    answer: str
    solution: str
    paraphrases: tuple[str, ...]
    expression: str = ""

    def solution_for(self, answer: str) -> str:
        """A response in the same format as ``solution`` that concludes ``answer`` (right or wrong)."""
        return f"{self.expression}={answer}. The answer is {answer}."

    def wrong_answer(self, rng: random.Random) -> str:
        """A plausible wrong answer: the other number (compare), one letter changed (reverse, sort),
        or the result off by 1, 2 or 10 (arithmetic). Never equal to ``answer``."""
        if self.category == "compare":
            first, second = self.expression[len("max(") : -1].split(",")
            return second if first == self.answer else first
        if self.category in ("reverse", "sort"):
            i = rng.randrange(len(self.answer))
            letter = rng.choice([c for c in _LETTERS if c != self.answer[i]])
            return self.answer[:i] + letter + self.answer[i + 1 :]
        value, delta = int(self.answer), rng.choice((-10, -2, -1, 1, 2, 10))
        return str(value + delta if value + delta >= 0 else value - delta)


def _problem(category: str, difficulty: int, expression: str, answer: str, phrasings: Sequence[str]) -> Problem:
    return Problem(
        category=category,
        difficulty=difficulty,
        question=phrasings[0],
        answer=answer,
        solution=f"{expression}={answer}. The answer is {answer}.",
        paraphrases=tuple(phrasings[1:]),
        expression=expression,
    )


def _add(rng: random.Random, difficulty: int) -> Problem:
    lo, hi = _NUMBER_RANGE[difficulty]
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    return _problem("add", difficulty, f"{a}+{b}", str(a + b), _phrase("add", a=a, b=b))


def _sub(rng: random.Random, difficulty: int) -> Problem:
    lo, hi = _NUMBER_RANGE[difficulty]
    a = rng.randint(lo, hi)
    b = rng.randint(lo, a)
    return _problem("sub", difficulty, f"{a}-{b}", str(a - b), _phrase("sub", a=a, b=b))


def _mul(rng: random.Random, difficulty: int) -> Problem:
    ranges = {1: ((1, 12), (1, 12)), 2: ((10, 99), (2, 9)), 3: ((10, 99), (10, 99))}[difficulty]
    a, b = rng.randint(*ranges[0]), rng.randint(*ranges[1])
    return _problem("mul", difficulty, f"{a}*{b}", str(a * b), _phrase("mul", a=a, b=b))


def _compare(rng: random.Random, difficulty: int) -> Problem:
    if difficulty == 3:  # same integer part, fractions of different length: 3.5 vs 3.45
        whole = rng.randint(0, 99)
        a, b = (f"{whole}.{frac}" for frac in rng.sample(_FRACTIONS, 2))
    else:
        lo, hi = (0, 99) if difficulty == 1 else (100, 999)
        a, b = (str(x) for x in rng.sample(range(lo, hi + 1), 2))
    larger = a if Decimal(a) > Decimal(b) else b
    return _problem("compare", difficulty, f"max({a},{b})", larger, _phrase("compare", x=a, y=b))


def _sum(rng: random.Random, difficulty: int) -> Problem:
    """Several numbers added step by step in an order drawn per problem: ``"12+5=17, 17+7=24"``."""
    count, (lo, hi) = _SUM_TERMS[difficulty]
    terms = [rng.randint(lo, hi) for _ in range(count)]
    listed = ", ".join(map(str, terms[:-1])) + f" and {terms[-1]}"
    order = rng.sample(terms, count)
    steps, total = [], order[0]
    for term in order[1:-1]:
        steps.append(f"{total}+{term}={total + term}")
        total += term
    steps.append(f"{total}+{order[-1]}")  # the last step's result is the answer, written by solution_for
    phrasings = _phrase("sum", terms=listed, plus="+".join(map(str, terms)))
    return _problem("sum", difficulty, ", ".join(steps), str(sum(terms)), phrasings)


def _word(rng: random.Random, difficulty: int, reject: Callable[[str], bool]) -> str:
    while True:
        word = "".join(rng.choices(_LETTERS, k=rng.choice(_WORD_LENGTHS[difficulty])))
        if not reject(word):
            return word


def _reverse(rng: random.Random, difficulty: int) -> Problem:
    w = _word(rng, difficulty, reject=lambda s: s == s[::-1])  # palindromes would be trivial
    return _problem("reverse", difficulty, f"reverse({w})", w[::-1], _phrase("reverse", w=w))


def _sort(rng: random.Random, difficulty: int) -> Problem:
    w = _word(rng, difficulty, reject=lambda s: list(s) == sorted(s))  # already sorted would be trivial
    return _problem("sort", difficulty, f"sort({w})", "".join(sorted(w)), _phrase("sort", w=w))


_MAKERS: dict[str, Callable[[random.Random, int], Problem]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "compare": _compare,
    "reverse": _reverse,
    "sort": _sort,
    "sum": _sum,
}


def _space_size(category: str, difficulty: int) -> int:
    """Number of distinct questions of one category and difficulty (upper bound for letter tasks)."""
    if category in ("add", "sub"):
        lo, hi = _NUMBER_RANGE[difficulty]
        k = hi - lo + 1
        return k * k if category == "add" else k * (k + 1) // 2
    if category == "mul":
        return {1: 144, 2: 720, 3: 8100}[difficulty]
    if category == "sum":
        count, (lo, hi) = _SUM_TERMS[difficulty]
        return (hi - lo + 1) ** count
    if category == "compare":
        return {1: 100 * 99, 2: 900 * 899, 3: 100 * len(_FRACTIONS) * (len(_FRACTIONS) - 1)}[difficulty]
    return sum(26**k for k in _WORD_LENGTHS[difficulty])


def split_of(problem: Problem) -> str:
    """The split a problem belongs to, from a stable hash of its category and question."""
    digest = hashlib.sha256(f"{problem.category}|{problem.question}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    return next(name for name, (lo, hi) in _SPLIT_BUCKETS.items() if lo <= bucket < hi)


def generate_problems(
    n: int,
    seed: int = 0,
    split: str = "train",
    categories: Sequence[str] | None = None,
    difficulties: Sequence[int] = (1, 2),
) -> list[Problem]:
    """Draw ``n`` distinct problems of one split, deterministically for a given seed.

    Each problem picks a (category, difficulty) pair uniformly at random among those not yet
    exhausted, so categories come out roughly balanced.

    Args:
        n: Number of problems.
        seed: Random seed; the same seed and arguments give the same list.
        split: ``"train"``, ``"val"`` or ``"test"``; the three are disjoint whatever the seed.
        categories: Task families to draw from (default: all of ``CATEGORIES``; ``TRACE_CATEGORIES`` on request).
        difficulties: Difficulty levels to draw from (1 easy .. 3 hard).

    Raises:
        ValueError: On an unknown split, category or difficulty, or when the split holds fewer than
            ``n`` distinct problems of the requested categories and difficulties.
    """
    categories = tuple(CATEGORIES if categories is None else categories)
    difficulties = tuple(difficulties)
    if split not in _SPLIT_BUCKETS:
        raise ValueError(f"split must be one of {tuple(_SPLIT_BUCKETS)}, got {split!r}")
    if unknown := [c for c in categories if c not in _MAKERS]:
        raise ValueError(f"unknown categories {unknown}; choose from {CATEGORIES + TRACE_CATEGORIES}")
    if not categories or not difficulties or any(d not in DIFFICULTIES for d in difficulties):
        raise ValueError(f"need at least one category and difficulties in {DIFFICULTIES}, got {difficulties}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    combos = [(c, d) for c in dict.fromkeys(categories) for d in dict.fromkeys(difficulties)]
    capacity = sum(_space_size(c, d) for c, d in combos)  # all splits together: a hard upper bound
    if n > capacity:
        raise ValueError(
            f"asked for {n} {split} problems but categories {categories} at difficulties {difficulties} "
            f"hold at most {capacity} across all splits; add categories or difficulties, or lower n"
        )
    rng = random.Random(f"ltune.tasks:{seed}:{split}")
    seen: set[tuple[str, str]] = set()
    misses = dict.fromkeys(combos, 0)
    active = list(combos)
    problems: list[Problem] = []
    while len(problems) < n:
        if not active:
            raise ValueError(
                f"only {len(problems)} distinct {split} problems exist for categories {categories} at "
                f"difficulties {difficulties}; asked for {n}"
            )
        combo = rng.choice(active)
        problem = _MAKERS[combo[0]](rng, combo[1])
        key = (problem.category, problem.question)
        if key in seen or split_of(problem) != split:
            misses[combo] += 1  # consecutive misses: the combo is taken as exhausted past a generous limit
            if misses[combo] > max(200, 20 * min(_space_size(*combo), 1000)):
                active.remove(combo)
            continue
        misses[combo] = 0
        seen.add(key)
        problems.append(problem)
    return problems
