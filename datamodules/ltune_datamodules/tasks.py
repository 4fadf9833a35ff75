"""Embedded verifiable tasks as rows of every data format ltune reads (instruction, preference, critique,
judgment, paraphrase, prompts, and a mixed-quality selection pool).

The problems come from :mod:`ltune.problems`: short arithmetic and string problems with one checkable
answer and a worked solution in a single regular format, ``"{expression}={answer}. The answer is {answer}."``
(e.g. ``"23+58=81. The answer is 81."``), so a ~1M-parameter model with a byte-level tokenizer can learn the easy
categories on a CPU in minutes, and every objective, selector and loop of ltune can be run, and measured, offline.
Splits are disjoint by construction (a stable hash of category and question); the seed decides which problems of a
split are drawn and in what order. The problem API stays importable from here (``CATEGORIES``, ``Problem``,
``generate_problems``, ``split_of``, ...).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from ltune.datamodules.sources import Source
from ltune.problems import (
    CATEGORIES,
    DIFFICULTIES,
    PHRASINGS,
    TRACE_CATEGORIES,
    Problem,
    generate_problems,
    split_of,
)
from ltune.seeding import run_seed

if TYPE_CHECKING:
    import datasets

Format = Literal["instruction", "preference", "critique", "judgment", "paraphrase", "prompts", "phrasings", "pool"]
FORMATS: tuple[str, ...] = get_args(Format)
NoiseKind = Literal["wrong", "garbled", "truncated", "off_task"]
NOISE_KINDS: tuple[str, ...] = get_args(NoiseKind)
_PARAPHRASES = min(len(v) for v in PHRASINGS.values()) - 1  # per problem: every phrasing but the question


class EmbeddedTasks(Source):
    """Procedurally generated verifiable tasks as rows of any ltune data format.

    Row columns per format (strings unless noted):

    * ``instruction``: prompt, response, answer, category.
    * ``preference``: prompt, chosen (correct solution), rejected (same format, wrong answer), answer, category.
    * ``critique`` (CFT): question, solution (a candidate, wrong in ``negative_fraction`` of rows),
      critique (ends with ``"Conclusion: right"`` or ``"Conclusion: wrong"``), answer, category.
    * ``judgment`` (CUT): instruction, response, judgment, label (``"positive"``/``"negative"``), answer, category.
    * ``paraphrase`` (CoIN): instruction, paraphrase, input (empty), output, answer, category.
    * ``prompts`` (RL and evaluation): prompt, answer, category.
    * ``phrasings`` (robustness evaluation): prompt, answer, category ``"phrasing<k>"``: each problem in its every
      phrasing in turn (k = 0 the canonical question, 1.. its paraphrases; ``n`` rows cover ``n / 4`` problems),
      so exact match per category compares phrasings on the same problems.
    * ``pool`` (data selection): prompt, response, answer, category, and the diagnostics quality
      (``"good"``/``"noisy"``), noise (its kind, see ``noise_kinds``), duplicate (bool), difficulty (int).
      Duplicate rows repeat another row exactly or with a paraphrased prompt.

    Args:
        format: Which row format to produce.
        n: Number of rows.
        seed: Random seed; rows are a deterministic function of all arguments. None: the run's seed
            (``seed_everything``) for the ``train`` split, 0 for ``val`` and ``test`` (held-out sets stay fixed).
        split: ``"train"``, ``"val"`` or ``"test"``; problems of different splits never overlap.
        categories: Task families (default: add, sub, mul, compare, reverse, sort; ``"sum"``, a multi-step
            running sum in a per-problem order, only when named).
        difficulties: Difficulty levels, 1 (easy) to 3 (hard).
        negative_fraction: Fraction of wrong candidates in ``critique`` rows and of negative ``judgment`` rows.
        noise_fraction: Fraction of noisy rows among the distinct rows of a ``pool``.
        duplicate_fraction: Fraction of a ``pool``'s rows that duplicate another row.
        noise_kinds: What a noisy ``pool`` row's response is, each kind equally likely: ``"wrong"`` (a worked
            answer with a wrong result), ``"garbled"`` (that answer's characters shuffled), ``"truncated"`` (the
            right worked answer cut off before its result), ``"off_task"`` (the worked answer of another problem,
            of another category where there is one). The row's ``noise`` column names its kind (``"none"`` if good).
        paraphrases: Which of each problem's paraphrases ``paraphrase`` rows draw from, as 0-based indices (default:
            all). Leaving one out keeps a phrasing for evaluation that training never saw (CoIN's unseen
            perturbations).
    """

    def __init__(
        self,
        format: Format = "instruction",
        n: int = 1000,
        seed: int | None = None,
        split: Literal["train", "val", "test"] = "train",
        categories: Sequence[str] | None = None,
        difficulties: Sequence[int] = (1, 2),
        negative_fraction: float = 0.5,
        noise_fraction: float = 0.2,
        duplicate_fraction: float = 0.1,
        paraphrases: Sequence[int] | None = None,
        noise_kinds: Sequence[NoiseKind] = ("wrong", "garbled"),
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        for field, value in (
            ("negative_fraction", negative_fraction),
            ("noise_fraction", noise_fraction),
            ("duplicate_fraction", duplicate_fraction),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field} must be in [0, 1], got {value}")
        self.format = format
        self.n = n
        self.seed = run_seed(seed) if split == "train" else (0 if seed is None else seed)
        self.split = split
        self.categories = None if categories is None else list(categories)
        self.difficulties = list(difficulties)
        self.negative_fraction = negative_fraction
        self.noise_fraction = noise_fraction
        self.duplicate_fraction = duplicate_fraction
        if paraphrases is not None and (not paraphrases or not all(0 <= k < _PARAPHRASES for k in paraphrases)):
            raise ValueError(
                f"paraphrases must be a non-empty list of indices in 0..{_PARAPHRASES - 1}, got {list(paraphrases)}"
            )
        self.paraphrases = None if paraphrases is None else list(paraphrases)
        if not noise_kinds or not set(noise_kinds) <= set(NOISE_KINDS):
            raise ValueError(f"noise_kinds must be a non-empty list of {NOISE_KINDS}, got {list(noise_kinds)}")
        self.noise_kinds = list(noise_kinds)

    @property
    def name(self) -> str:
        """A short identifier for messages and cache keys, e.g. ``"embedded:instruction/train/seed0"``."""
        return f"embedded:{self.format}/{self.split}/seed{self.seed}"

    def __repr__(self) -> str:
        return f"EmbeddedTasks({self.name}, n={self.n})"

    def problems(self, n: int | None = None) -> list[Problem]:
        """The underlying problems (``n`` defaults to the number of rows)."""
        return generate_problems(self.n if n is None else n, self.seed, self.split, self.categories, self.difficulties)

    def load(self) -> datasets.Dataset:
        """The rows as a Hugging Face ``datasets.Dataset``."""
        import datasets

        return datasets.Dataset.from_list(self.rows())

    def rows(self) -> list[dict[str, Any]]:
        """The rows of the chosen format, deterministic for the given arguments."""
        rng = random.Random(f"ltune.tasks.rows:{self.seed}:{self.split}:{self.format}")
        if self.format == "pool":
            return self._pool_rows(rng)
        if self.format == "phrasings":
            phrasings = 1 + _PARAPHRASES
            return [
                {"prompt": q, "answer": p.answer, "category": f"phrasing{k}"}
                for p in self.problems(-(-self.n // phrasings))
                for k, q in enumerate((p.question, *p.paraphrases[:_PARAPHRASES]))
            ][: self.n]
        problems = self.problems()
        negatives = set(rng.sample(range(len(problems)), round(self.negative_fraction * len(problems))))
        return [self._row(p, rng, negative=i in negatives) for i, p in enumerate(problems)]

    def _row(self, p: Problem, rng: random.Random, negative: bool) -> dict[str, Any]:
        meta = {"answer": p.answer, "category": p.category}
        if self.format == "instruction":
            return {"prompt": p.question, "response": p.solution, **meta}
        if self.format == "prompts":
            return {"prompt": p.question, **meta}
        if self.format == "preference":
            return {"prompt": p.question, "chosen": p.solution, "rejected": p.solution_for(p.wrong_answer(rng)), **meta}
        if self.format == "paraphrase":
            paraphrase = rng.choice([p.paraphrases[k] for k in self.paraphrases] if self.paraphrases else p.paraphrases)
            return {"instruction": p.question, "paraphrase": paraphrase, "input": "", "output": p.solution, **meta}
        wrong = p.wrong_answer(rng)
        if self.format == "critique":
            if negative:
                critique = f"{p.expression}={wrong} is wrong; {p.expression}={p.answer}. Conclusion: wrong"
            else:
                critique = f"{p.expression}={p.answer} is correct. Conclusion: right"
            solution = p.solution_for(wrong) if negative else p.solution
            return {"question": p.question, "solution": solution, "critique": critique, **meta}
        # judgment
        if negative:
            judgment = f"Wrong: {p.expression} is {p.answer}, not {wrong}."
            response, label = p.solution_for(wrong), "negative"
        else:
            judgment = f"Perfect. The answer {p.answer} is correct."
            response, label = p.solution, "positive"
        return {"instruction": p.question, "response": response, "judgment": judgment, "label": label, **meta}

    def _pool_rows(self, rng: random.Random) -> list[dict[str, Any]]:
        n_duplicates = round(self.duplicate_fraction * self.n)
        problems = self.problems(self.n - n_duplicates)
        noisy = set(rng.sample(range(len(problems)), round(self.noise_fraction * len(problems))))
        rows = []
        for i, p in enumerate(problems):
            kind, response = _noisy_response(p, rng, self.noise_kinds, problems) if i in noisy else ("none", p.solution)
            rows.append(
                {
                    "prompt": p.question,
                    "response": response,
                    "answer": p.answer,
                    "category": p.category,
                    "quality": "noisy" if i in noisy else "good",
                    "noise": kind,
                    "duplicate": False,
                    "difficulty": p.difficulty,
                }
            )
        copies = []
        for _ in range(n_duplicates if problems else 0):
            j = rng.randrange(len(problems))
            copy = dict(rows[j], duplicate=True)
            if rng.random() < 0.5:  # near duplicate: same response, paraphrased prompt
                copy["prompt"] = rng.choice(problems[j].paraphrases)
            copies.append(copy)
        rows += copies
        rng.shuffle(rows)
        return rows


def _noisy_response(
    p: Problem, rng: random.Random, kinds: Sequence[str], problems: Sequence[Problem]
) -> tuple[str, str]:
    """A noisy response of one of ``kinds`` (equally likely) and its kind. None contains the right answer where it
    could verify: a garbled or truncated response never holds it as a substring (else the wrong answer is used).
    With the default kinds the random draws are those of the first pools (rows reproduce)."""
    wrong = p.solution_for(p.wrong_answer(rng))
    kind = kinds[min(int(rng.random() * len(kinds)), len(kinds) - 1)]
    if kind == "garbled":
        for _ in range(10):
            garbled = "".join(rng.sample(wrong, len(wrong)))
            if p.answer.lower() not in garbled.lower():
                return kind, garbled
    elif kind == "truncated":  # cut inside the worked expression, before its result ("11+16=27..." -> "11+1")
        end = p.solution.find("=")
        end = end + 1 if end > 0 else len(p.solution) // 2
        cut = p.solution[: rng.randint(max(1, end // 2), end)]
        if cut and p.answer.lower() not in cut.lower():
            return kind, cut
    elif kind == "off_task":
        others = [q for q in problems if q.category != p.category] or [q for q in problems if q.answer != p.answer]
        if others:
            return kind, rng.choice(others).solution
    return "wrong", wrong


__all__ = [
    "CATEGORIES",
    "TRACE_CATEGORIES",
    "DIFFICULTIES",
    "FORMATS",
    "EmbeddedTasks",
    "Format",
    "Problem",
    "generate_problems",
    "split_of",
]
