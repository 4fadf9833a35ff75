"""Torchmetrics for verifiable answers: exact match, majority@N and unbiased pass@k.

All states are sums (``dist_reduce_fx="sum"``), so the metrics reduce correctly across DDP ranks.
Answers are read out of raw completions with ``ltune.rewards.final_answer``: strictly by default (only an answer the
reply states, or a reply that is one bare value), leniently with ``strict=False`` (else the last number). References
are read with ``ltune.rewards.reference_answer`` (a bare value, GSM8K's ``#### N``, MATH's ``\\boxed{...}``) and
compared with ``ltune.rewards.is_equivalent``.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import torch
from torchmetrics import Metric

from ltune.rewards import answer_matches, final_answer, is_equivalent, majority_vote, reference_answer

__all__ = ["ExactMatch", "MajorityAtN", "PassAtK", "pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al., 2021): ``1 - C(n-c, k) / C(n, k)``.

    Args:
        n: Samples drawn for the prompt.
        c: Correct samples among them.
        k: Budget of attempts; ``k <= n``.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


class ExactMatch(Metric):
    """Fraction of completions whose answer is equivalent to the reference answer.

    Args:
        strict: Read only stated answers and bare values (:func:`ltune.rewards.final_answer`); False also takes the
            last number of a reply, which can score a false sentence ("3 is larger than 39.") as right.
        categories: Optional fixed list of task categories. When given, ``update`` takes the category
            of each example and ``compute`` returns a dict: ``"all"`` plus one accuracy per category
            (``nan`` for a category with no examples).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, categories: Sequence[str] | None = None, strict: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.strict = strict
        self.categories = None if categories is None else list(categories)
        self.add_state("correct", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        if self.categories is not None:
            size = len(self.categories)
            self.add_state("correct_by_category", default=torch.zeros(size), dist_reduce_fx="sum")
            self.add_state("total_by_category", default=torch.zeros(size), dist_reduce_fx="sum")

    def update(
        self, predictions: Sequence[str], references: Sequence[str], categories: Sequence[str] | None = None
    ) -> None:
        """Add a batch.

        Args:
            predictions: Raw completions.
            references: Reference answers.
            categories: Category of each example; required when the metric was built with categories.
        """
        _check_lengths(predictions, references)
        hits = [answer_matches(p, r, self.strict) for p, r in zip(predictions, references)]
        self.correct += sum(hits)
        self.total += len(hits)
        if self.categories is None:
            return
        if categories is None or len(categories) != len(hits):
            raise ValueError("ExactMatch was built with categories: pass one category per prediction")
        for hit, category in zip(hits, categories):
            if category not in self.categories:
                raise ValueError(f"unknown category {category!r}; expected one of {self.categories}")
            i = self.categories.index(category)
            self.correct_by_category[i] += hit
            self.total_by_category[i] += 1

    def compute(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """The accuracy, or a dict ``{"all": ..., category: ...}`` when built with categories."""
        overall = self.correct / self.total if self.total > 0 else torch.tensor(0.0)
        if self.categories is None:
            return overall
        per_category = self.correct_by_category / self.total_by_category  # nan where empty
        return {"all": overall, **dict(zip(self.categories, per_category.unbind()))}


class MajorityAtN(Metric):
    """maj@N: fraction of prompts whose majority-vote answer (over equivalence classes of the N
    samples' answers) is equivalent to the reference. TTRL logs this as ``label_accuracy``.

    Args:
        strict: Read answers as :class:`ExactMatch` does.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, strict: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.strict = strict
        self.add_state("correct", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, samples: Sequence[Sequence[str]], references: Sequence[str]) -> None:
        """Add a batch of prompts.

        Args:
            samples: For each prompt, its sampled completions.
            references: Reference answer of each prompt.
        """
        _check_lengths(samples, references)
        for completions, reference in zip(samples, references):
            voted, _ = majority_vote([final_answer(c, self.strict) for c in completions])
            self.correct += float(is_equivalent(voted, reference_answer(reference)))
            self.total += 1

    def compute(self) -> torch.Tensor:
        """maj@N accuracy over all prompts seen."""
        return self.correct / self.total if self.total > 0 else torch.tensor(0.0)


class PassAtK(Metric):
    """Unbiased pass@k (Chen et al., 2021), averaged over prompts.

    Per prompt with n samples of which c are correct: ``1 - C(n-c, k) / C(n, k)``; every prompt
    needs at least k samples.

    Args:
        k: Number of attempts.
        strict: Read answers as :class:`ExactMatch` does.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, k: int = 1, strict: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.strict = strict
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.add_state("score", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, samples: Sequence[Sequence[str]], references: Sequence[str]) -> None:
        """Add a batch of prompts.

        Args:
            samples: For each prompt, its sampled completions (at least k).
            references: Reference answer of each prompt.
        """
        _check_lengths(samples, references)
        for completions, reference in zip(samples, references):
            correct = sum(answer_matches(c, reference, self.strict) for c in completions)
            self.score += pass_at_k(len(completions), correct, self.k)
            self.total += 1

    def compute(self) -> torch.Tensor:
        """Mean pass@k over all prompts seen."""
        return self.score / self.total if self.total > 0 else torch.tensor(0.0)
