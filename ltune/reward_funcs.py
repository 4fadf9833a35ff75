"""Reward functions of the GRPO family, called as TRL calls them, and the built-in ones.

A reward function takes keyword arguments and returns one value per completion: a number, or None where it does not
apply (TRL's signature, so a function written for TRL's ``reward_funcs`` runs unchanged)::

    def brevity(completions, completion_ids, **kwargs) -> list[float | None]:
        return [-len(ids) / 100 for ids in completion_ids]

Keyword arguments: ``prompts``, the rows' prompts as given (strings or message lists), and ``completions``, the
decoded completions (strings; ``[{"role": "assistant", "content": ...}]`` for message prompts), each prompt repeated
for its completions, which are consecutive; ``completion_ids``, token ids up to and including the stop token; every
other column of the rows by its name, as a list of the same length (``answer``, your own columns). ltune adds
``prompt_ids``, ``group_size`` (completions per prompt) and ``log_metric(name, value)`` (logged as ``train/<name>``).

In a config an entry is a function's import path (``my_rewards.brevity``, from the working directory or an installed
package) or ``class_path``/``init_args`` of a callable class; one with a ``bind(objective)`` method gets the training
objective before the first step (a reward model, a judge).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from ltune.metrics import pass_at_k
from ltune.rewards import answer_matches, extract_answer, is_equivalent, majority_vote, reference_answer, stated_answer

RewardFunc = Callable[..., Sequence[float | None]]


class RewardError(ValueError):
    """A reward function raised, or returned other than one number (or None) per completion."""


def reward_name(f: Any) -> str:
    """TRL's name of a reward: a function's ``__name__`` (partials unwrapped), else the callable's class name."""
    while isinstance(f, functools.partial):
        f = f.func
    return getattr(f, "__name__", None) or type(f).__name__


def completion_text(completion: str | list[dict]) -> str:
    """A completion's text: the string, or a conversational completion's assistant content."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def _as_float(v: Any) -> float:
    """A reward value as a float (None and NaN: NaN, "does not apply"); raises ``TypeError`` for anything else."""
    if v is None:
        return math.nan
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    if not isinstance(v, Real) or math.isinf(float(v)):
        raise TypeError
    return float(v)  # NaN stays NaN: "does not apply", as None (TRL's tensor makes them one)


def call_rewards(funcs: Sequence[RewardFunc], rows: Sequence[str], inputs: dict[str, Any]) -> Tensor:
    """``[N, F]`` float32 values of each function on the ``N`` completions (NaN for None).

    Args:
        funcs: The reward functions.
        rows: Where each completion's prompt row comes from (``"train.jsonl: row 3"``), for error messages.
        inputs: The keyword arguments every function gets (lists of ``N``, and the extras).

    Raises:
        RewardError: One line naming the function and the row: it raised (the first row it raises on, found by
            calling it row by row), returned a wrong count, or a value that is not a finite number or None.
    """
    n = len(inputs["completions"])
    out = torch.full((n, len(funcs)), math.nan)
    for k, f in enumerate(funcs):
        name = reward_name(f)
        try:
            values = f(**inputs)
        except Exception as e:  # noqa: BLE001 - any failure of user code is reported, with the row that causes it
            i = _failing_row(f, inputs, n)
            at = f" on completion {i} ({rows[i]})" if i is not None else ""
            raise RewardError(f"reward '{name}' raised {type(e).__name__}: {e}{at}") from e
        if isinstance(values, Tensor):
            values = values.reshape(-1).tolist()
        if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or len(values) != n:
            got = f"{len(values)} values" if isinstance(values, Sequence) else f"a {type(values).__name__}"
            raise RewardError(f"reward '{name}' returned {got} for {n} completions: return a list, one per completion")
        for i, v in enumerate(values):
            try:
                out[i, k] = _as_float(v)
            except TypeError:
                raise RewardError(
                    f"reward '{name}' returned {v!r} ({type(v).__name__}) for completion {i} ({rows[i]}): "
                    "return a finite number, or None (or NaN) where the reward does not apply"
                ) from None
    return out


def _failing_row(f: RewardFunc, inputs: dict, n: int) -> int | None:
    for i in range(n):
        one = {k: v[i : i + 1] if isinstance(v, list) and len(v) == n else v for k, v in inputs.items()}
        try:
            f(**{**one, "group_size": 1})
        except Exception:  # noqa: BLE001
            return i
    return None


def weighted_sum(values: Tensor, weights: Sequence[float] | None = None) -> Tensor:
    """``[N]`` TRL's reward: the weighted sum over functions with None (NaN) counted as 0, and NaN for a completion
    that no function scored (it is then left out of the baselines and gets no advantage)."""
    w = torch.ones(values.shape[1]) if weights is None else torch.as_tensor(weights, dtype=values.dtype)
    w = w.to(values.device)
    total = (values * w).nansum(1)
    return torch.where(values.isnan().all(1), math.nan, total)


def reward_metrics(values: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """``rewards/<name>/mean`` and ``/std`` (Bessel) of each function over the completions it scored (TRL's), and
    ``/scored``, the share it scored (the rest returned None)."""
    out = {}
    for k, name in enumerate(names):
        v = values[:, k][~values[:, k].isnan()]
        out[f"rewards/{name}/scored"] = torch.tensor(len(v) / max(len(values), 1))
        out[f"rewards/{name}/mean"] = v.mean() if len(v) else torch.tensor(math.nan)
        out[f"rewards/{name}/std"] = v.std() if len(v) > 1 else torch.tensor(math.nan)
    return out


def score_rollouts(
    funcs: Sequence[RewardFunc], weights: Sequence[float] | None, batch: dict, texts: list[str], samples, n: int
) -> tuple[Tensor, dict[str, Tensor | float]]:
    """Call ``funcs`` on a step's rollouts as TRL does: ``[B * n]`` weighted rewards and the metrics to log.

    Args:
        funcs: The reward functions.
        weights: Their weights (None: all 1).
        batch: The prompt rows (``PromptData``): ``prompt``, ``answer``, ``category``, ``columns`` (each row's other
            columns), ``source_row``.
        texts: ``B * n`` decoded completions, prompt-major.
        samples: Their :class:`ltune.generation.Samples` (token ids).
        n: Completions per prompt.
    """
    b = len(batch["prompt_ids"])
    rep = lambda values: [v for v in values for _ in range(n)]  # noqa: E731  (each row for its n completions)
    real = lambda ids, mask: [t[m.bool()].tolist() for t, m in zip(ids, mask)]  # noqa: E731
    prompts = rep(batch.get("prompt") or [None] * b)
    columns = {k: rep(batch[k]) for k in ("answer", "category") if k in batch}
    extra = batch.get("columns") or [{}] * b
    for key in dict.fromkeys(k for row in extra for k in row):
        columns.setdefault(key, rep([row.get(key) for row in extra]))
    logged: dict[str, float] = {}
    inputs = {
        "prompts": prompts,
        "completions": [
            t if p is None or isinstance(p, str) else [{"role": "assistant", "content": t}]
            for p, t in zip(prompts, texts)
        ],
        "completion_ids": real(samples.completion_ids, samples.completion_mask),
        "prompt_ids": real(samples.prompt_ids, samples.prompt_mask),
        "group_size": n,
        "log_metric": lambda name, value: logged.__setitem__(name, float(value)),
    }
    rows = rep(batch.get("source_row") or [f"prompt {i} of the batch" for i in range(b)])
    if clash := sorted(set(columns) & set(inputs)):
        raise RewardError(f"{rows[0]}: column '{clash[0]}' has the name of a reward function argument: rename it")
    values = call_rewards(funcs, rows, {**inputs, **columns})
    metrics = reward_metrics(values, [reward_name(f) for f in funcs])
    return weighted_sum(values, weights), {**metrics, **logged}


# ---- built-in rewards --------------------------------------------------------------------------------------------
def accuracy_reward(completions: list, answer: list[str | None] | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 when a completion's final answer, read leniently (:func:`ltune.rewards.extract_answer`), is equivalent to
    its row's ``answer`` (a bare value or a worked solution: :func:`ltune.rewards.reference_answer`), else 0.0; None
    for a row without one (the share it scores is logged as ``rewards/<name>/scored``)."""
    if answer is None:
        raise ValueError("the rows have no 'answer' column (the reference answer this reward checks against)")
    return [
        None if a is None else float(answer_matches(completion_text(c), a, strict=False))
        for c, a in zip(completions, answer)
    ]


def format_reward(completions: list, **kwargs: Any) -> list[float]:
    """1.0 when a completion states its final answer explicitly (``\\boxed{...}`` or "the answer is ..."), else 0.0."""
    return [float(stated_answer(completion_text(c)) is not None) for c in completions]


class PatternReward:
    """1.0 when a completion matches a regular expression from its start (``re.match`` with ``DOTALL`` and
    ``MULTILINE``, as TRL's ``think_format_reward`` matches ``^<think>(?!.*<think>)(.*?)</think>.*$``), else 0.0.

    Args:
        pattern: The regular expression.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern, re.DOTALL | re.MULTILINE)

    def __call__(self, completions: list, **kwargs: Any) -> list[float]:
        return [float(self.pattern.match(completion_text(c)) is not None) for c in completions]


class SoftOverlongPunishment:
    """DAPO's length reward (Yu et al., 2025, arXiv:2503.14476, Eq. 13) of a completion of ``L`` tokens: 0 for
    ``L <= L_max - L_cache``, ``(L_max - L_cache - L) / L_cache`` up to ``L_max``, -1 beyond.

    Args:
        max_length: ``L_max``, tokens (at most the objective's ``max_completion_length`` to matter).
        cache: ``L_cache``, the tokens over which the penalty grows from 0 to -1.
    """

    def __init__(self, max_length: int, cache: int) -> None:
        if not 0 < cache <= max_length:
            raise ValueError(f"cache={cache} must be in (0, max_length={max_length}]")
        self.max_length, self.cache = max_length, cache

    def __call__(self, completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        free = self.max_length - self.cache
        return [
            0.0 if len(c) <= free else -1.0 if len(c) > self.max_length else (free - len(c)) / self.cache
            for c in completion_ids
        ]


def majority_rewards(answers: list[str | None]) -> tuple[list[float], str | None, float]:
    """TTRL's pseudo-reward of one prompt: 1 for each answer equivalent to the majority answer, else 0.

    Returns:
        The rewards, the majority answer (``None`` when no sample has an answer) and its share of the samples.
    """
    label, ratio = majority_vote(answers)
    return [float(is_equivalent(a, label)) for a in answers], label, ratio


class MajorityVote:
    """TTRL's reward (Zuo et al., 2025, arXiv:2504.16084): 1 for each completion whose answer is equivalent to the
    majority answer of its prompt's completions, else 0. No labels used; a row's ``answer``, when given, feeds only
    the metrics it logs: ``label_accuracy`` (maj@N), ``reward_accuracy`` (the pseudo-reward equals the true one),
    ``majority_ratio``, ``ground_truth_ratio``, ``pass@N``, ``post_ground_truth_ratio`` (over the first ``kept``
    completions of each prompt) and, always, ``majority_voting_reward``.

    Args:
        placebo: Shuffle each prompt's pseudo-rewards among its completions (a matched control: the same reward
            counts, no information on which completion agrees with the majority).
        kept: Completions per prompt that enter the update (TTRL's N_train), for ``post_ground_truth_ratio``.
    """

    def __init__(self, placebo: bool = False, kept: int | None = None) -> None:
        self.placebo, self.kept = placebo, kept

    def __call__(self, completions: list, group_size: int, answer: list | None = None, log_metric=None, **kwargs):
        n = group_size
        answers = [extract_answer(completion_text(c)) for c in completions]
        truths = [reference_answer(a) for a in answer[::n]] if answer is not None else [None] * (len(answers) // n)
        rewards: list[float] = []
        stats: dict[str, list[float]] = {}
        for b, truth in enumerate(truths):
            group = answers[b * n : (b + 1) * n]
            pseudo, label, ratio = majority_rewards(group)
            if self.placebo:
                pseudo = [pseudo[j] for j in torch.randperm(n).tolist()]
            rewards += pseudo
            stats.setdefault("majority_ratio", []).append(ratio)
            stats.setdefault("majority_voting_reward", []).append(sum(pseudo) / n)
            if truth is None:  # label-free: nothing below is computable, nothing of it enters the reward
                continue
            true = [float(is_equivalent(a, truth)) for a in group]
            stats.setdefault("label_accuracy", []).append(float(is_equivalent(label, truth)))
            stats.setdefault("reward_accuracy", []).append(sum(p == t for p, t in zip(pseudo, true)) / n)
            stats.setdefault("ground_truth_ratio", []).append(sum(true) / n)
            stats.setdefault(f"pass@{n}", []).append(pass_at_k(n, int(sum(true)), n))
            if self.kept:
                stats.setdefault("post_ground_truth_ratio", []).append(sum(true[: self.kept]) / self.kept)
        for name, v in stats.items():
            if log_metric is not None:
                log_metric(name, sum(v) / len(v))
        return rewards
