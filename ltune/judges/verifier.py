"""``VerifierJudge``: a referee that checks answers with a solver instead of reading an LM's opinion."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ltune.judges.base import PairJudge
from ltune.problems import solve
from ltune.rewards import extract_answer, is_equivalent


class VerifierJudge(PairJudge):
    """A referee that checks answers instead of reading an LM's opinion: an answer rates ``correct`` when its final
    answer (:func:`ltune.rewards.extract_answer`) is equivalent to the reference that ``solver`` computes from the
    question, ``wrong`` otherwise, and NaN (unjudged) when the solver cannot read the question. It stands in for a
    strong LM referee on tasks a program can solve, such as the embedded tasks (:func:`ltune.problems.solve`, which
    also reads questions a model wrote). It rates, and scores as a reward (``score``); it cannot
    generate or give pair preferences.

    Args:
        solver: Question -> reference answer, or None when unreadable (default: the embedded tasks' ``solve``).
        correct: Rating of a verified answer.
        wrong: Rating of any other answer (no final answer included).
    """

    def __init__(
        self, solver: Callable[[str], str | None] | None = None, correct: float = 10.0, wrong: float = 1.0
    ) -> None:
        super().__init__()
        self.solver, self.correct, self.wrong = solver or solve, correct, wrong

    def verdicts(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        """The rating of each answer to its question."""
        out = []
        for question, answer in zip(questions, answers):
            reference = self.solver(question)
            if reference is None:
                out.append(math.nan)
            else:
                out.append(self.correct if is_equivalent(extract_answer(answer), reference) else self.wrong)
        return out

    def rate_pair(
        self, questions: Sequence[str], first: Sequence[str], second: Sequence[str], template: str = ""
    ) -> tuple[list[float], list[float]]:
        """The two slots' ratings; ``template`` is ignored (no prompt is rendered), so the order cannot matter."""
        return self.verdicts(questions, first), self.verdicts(questions, second)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        """A reward on ``LMJudge.score``'s [-1, 1] scale, so it can serve as a sequence scorer (e.g. MoDS's reward):
        +1 for a verified answer, -1 for any other, NaN when the question is unreadable."""
        return torch.tensor(
            [v if math.isnan(v) else 1.0 if v == self.correct else -1.0 for v in self.verdicts(prompts, responses)]
        )
