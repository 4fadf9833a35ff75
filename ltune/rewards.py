"""Answer extraction, answer equivalence, majority vote and the verifier reward.

A reply's *stated* answer is the last ``\\boxed{...}`` (brace-matched), else GSM8K's last ``#### X`` line, else the
last "the answer is X"; a reply that is one bare value (``"81"``, ``"tac"``, ``"$\\frac{1}{2}$."``) states it too.
The strict reading (:func:`final_answer`, evaluation's default) stops there: a number picked out of a sentence is never
an answer, so "3 is larger than 39." answers nothing. The lenient reading (:func:`extract_answer`, the order of the TTRL
/ Qwen-Math parser, used by rewards and votes) falls back to the last number. Reference answers are read the same way
(:func:`reference_answer`): a GSM8K solution, a MATH solution with its boxed answer, or a bare value.

Equivalence is the plain normaliser first
(``"4.0" == "4"``, ``"1,234" == "1234"``), then symbolic equivalence with ``math_verify`` when both
sides look like mathematics. Words never go to ``math_verify``: it would read ``"tac"`` as
``t*a*c`` and call it equal to ``"cat"``.

``math_verify`` enforces its timeouts with ``signal.alarm``, which fails outside the main thread
(dataloader workers, Lightning callbacks run in threads, Ray). Its timeouts are disabled here and
the inputs bounded instead: only extracted answers of at most ``_MAX_MATH_CHARS`` characters are
parsed, and results are cached.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache

__all__ = [
    "answer_groups",
    "answer_matches",
    "bare_answer",
    "extract_answer",
    "final_answer",
    "is_equivalent",
    "majority_vote",
    "normalize_answer",
    "reference_answer",
    "stated_answer",
    "verifier_reward",
]

_MAX_MATH_CHARS = 64
_ANSWER_IS = re.compile(r"the\s+(?:final\s+)?answer\s+is\s*:?\s*", re.IGNORECASE)
# A number: optional sign (not when it is a binary minus, as in "58-23"), thousands commas, decimals, fraction.
_NUMBER = re.compile(r"(?:(?<![\w)])-)?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+")
_WORD = re.compile(r"[a-zA-Z]{2,}")
_HASHES = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.MULTILINE)  # GSM8K's final line: "#### 72"
_ARITHMETIC = re.compile(r"\d\s*[-+*×]\s*\d")  # numbers joined by an operator: an expression, not a value
_EMPHASIS = re.compile(r"^(\*\*|__|`)(.*)\1$")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` whose braces close (nested braces allowed)."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j].strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def _answer_is(text: str) -> str | None:
    """What follows the last "the answer is", up to the end of the line or of the sentence."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    tail = text[matches[-1].end() :].split("\n", 1)[0]
    tail = re.split(r"\.\s", tail, maxsplit=1)[0].strip()  # a sentence ends at ". " (not inside "3.5")
    tail = tail.rstrip(".").strip()
    if len(tail) >= 2 and tail[0] == tail[-1] == "$":
        tail = tail[1:-1].strip()
    return tail or None


def _hashes(text: str) -> str | None:
    """What follows GSM8K's last ``#### `` line marker."""
    found = _HASHES.findall(text)
    return found[-1].rstrip(".").strip() or None if found else None


def stated_answer(text: str) -> str | None:
    """The answer a text states explicitly: the last ``\\boxed{...}``, else the last ``#### X`` line, else the last
    "the answer is X"; else None."""
    return (_last_boxed(text) or _hashes(text) or _answer_is(text)) if text else None


def bare_answer(text: str) -> str | None:
    """The text itself when it is one bare value: no whitespace inside once stripped of a trailing period, of ``$``
    delimiters and of markdown emphasis (``"81"``, ``"**tac**"``, ``"$\\frac{1}{2}$."``), at most 64 characters, its
    braces balanced, no ``\\boxed`` left open, no ``=``, ``<`` or ``>`` (``"19+16=3"`` is a claim) and no numbers joined
    by an operator (``"16+14"`` is the question's expression; ``"3+\\sqrt{2}"`` and ``"3/4"`` are values)."""
    s = (text or "").strip().rstrip(".").strip()
    if len(s) >= 2 and s[0] == s[-1] == "$":
        s = s[1:-1].strip()
    if m := _EMPHASIS.fullmatch(s):
        s = m.group(2).strip()
    if not s or len(s) > _MAX_MATH_CHARS or any(c.isspace() for c in s) or "\\boxed" in s or any(c in s for c in "=<>"):
        return None
    if _ARITHMETIC.search(s):  # "16+14" restates a question; math_verify would evaluate it to the answer
        return None
    return s if s.count("{") == s.count("}") else None  # an unclosed brace is a cut-off reply


def final_answer(text: str, strict: bool = True) -> str | None:
    """The answer a reply gives.

    Args:
        text: A model completion.
        strict: Only an answer the reply states (:func:`stated_answer`) or a reply that is one bare value
            (:func:`bare_answer`); when False, else the last number in the text (:func:`extract_answer`).

    Returns:
        The answer string, or ``None`` when the reply gives none.
    """
    if not text:
        return None
    if found := stated_answer(text) or bare_answer(text):
        return found
    numbers = [] if strict else _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def reference_answer(reference: str | None) -> str | None:
    """A reference answer in the form public sets give it: the answer a worked solution states (GSM8K's ``#### N``,
    MATH's ``\\boxed{...}``, "the answer is X"), else the whole reference (a bare value)."""
    if reference is None:
        return None
    return stated_answer(reference) or reference.strip() or None


def answer_matches(text: str, reference: str | None, strict: bool = True) -> bool:
    """Whether a completion's answer (:func:`final_answer`) is equivalent to a reference (:func:`reference_answer`)."""
    return is_equivalent(final_answer(text, strict), reference_answer(reference))


def extract_answer(text: str) -> str | None:
    """The final answer in a completion, read leniently: :func:`final_answer` with ``strict=False`` (the stated
    answer, else a bare value, else the last number in the text). Rewards and majority votes read answers this way."""
    return final_answer(text, strict=False)


def normalize_answer(ans: str) -> str:
    """Plain normal form: stripped, lower-cased, no ``$``, no spaces, no trailing period, no thousands
    commas, and numbers in canonical decimal form (``"4.0"`` -> ``"4"``, ``"-0"`` -> ``"0"``)."""
    s = ans.strip().lower().replace("$", "")
    s = "".join(s.split()).rstrip(".")
    s = _THOUSANDS_COMMA.sub("", s)
    if _PLAIN_NUMBER.fullmatch(s):
        try:
            value = Decimal(s).normalize()
        except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
            return s
        s = format(value, "f")
        s = "0" if s in ("-0", "0") else s
    return s


def _looks_mathematical(s: str) -> bool:
    """A digit or a LaTeX command, and no word of two or more letters outside LaTeX commands."""
    if len(s) > _MAX_MATH_CHARS or not re.search(r"[\d\\]", s):
        return False
    return not _WORD.search(_LATEX_COMMAND.sub(" ", s))


class _NoTimeoutWarning(logging.Filter):
    """Drops math_verify's warning that its timeout is disabled: inputs are bounded here instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


@lru_cache(maxsize=1)
def _math_verify() -> tuple[Callable, Callable]:
    from math_verify import parse, verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_NoTimeoutWarning())
    return parse, verify


@lru_cache(maxsize=65536)
def _parse(s: str) -> tuple:
    parse, _ = _math_verify()
    return tuple(parse(f"${s}$", parsing_timeout=None))


@lru_cache(maxsize=65536)
def _math_equal(pred: str, ref: str) -> bool:
    _, verify = _math_verify()
    gold, target = _parse(ref), _parse(pred)
    if not gold or not target:
        return False
    return bool(verify(list(gold), list(target), timeout_seconds=None))


def is_equivalent(pred: str | None, ref: str | None) -> bool:
    """Whether a predicted answer equals a reference answer.

    Equal after ``normalize_answer``, or, when both look mathematical (digits or LaTeX, no words),
    symbolically equal under ``math_verify`` (``"0.5"`` == ``"\\frac{1}{2}"``). ``None`` is never
    equivalent to anything.
    """
    if pred is None or ref is None:
        return False
    p, r = normalize_answer(pred), normalize_answer(ref)
    if not p or not r:
        return False
    if p == r:
        return True
    return _looks_mathematical(p) and _looks_mathematical(r) and _math_equal(p, r)


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, float]:
    """The most common answer, counted over equivalence classes rather than raw strings.

    Args:
        answers: Extracted answers of the samples of one prompt; ``None`` for "no answer".

    Returns:
        ``(representative, fraction)``: the first-seen member of the largest class and that class's
        share of *all* answers (``None`` included in the denominator). Ties go to the class seen first.
        ``(None, 0.0)`` when every answer is ``None`` or there are none.
    """
    # Group identical normal forms first (cheap), then merge groups that are equivalent.
    groups: dict[str, list] = {}  # normal form -> [first raw answer, count]
    for a in answers:
        if a is None or not normalize_answer(a):
            continue
        groups.setdefault(normalize_answer(a), [a, 0])[1] += 1
    classes: list[list] = []  # [representative raw answer, count], in order of first occurrence
    for rep, count in groups.values():
        for cls in classes:
            if is_equivalent(rep, cls[0]):
                cls[1] += count
                break
        else:
            classes.append([rep, count])
    if not classes:
        return None, 0.0
    best = classes[0]
    for cls in classes[1:]:
        if cls[1] > best[1]:
            best = cls
    return best[0], best[1] / len(answers)


def verifier_reward(completions: Sequence[str], references: Sequence[str]) -> list[float]:
    """1.0 for each completion whose answer, read leniently (:func:`extract_answer`), is equivalent to its reference
    (:func:`reference_answer`), else 0.0.

    Raises:
        ValueError: If the two sequences differ in length.
    """
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    return [float(answer_matches(c, r, strict=False)) for c, r in zip(completions, references)]


def answer_groups(texts: Sequence[str], n: int, truths: Sequence[str | None]):
    """The extracted answers of each prompt's ``n`` consecutive completions, with that prompt's reference answer.

    Args:
        texts: ``len(truths) * n`` completions, prompt-major (TTRL's votes, RLSC's samples).
        n: Completions per prompt.
        truths: One reference answer per prompt, ``None`` where the rows carry none (label-free).

    Yields:
        ``(answers, truth)`` per prompt: ``n`` extracted answers (``None`` where a completion has none) and the
        reference read by :func:`reference_answer`.
    """
    answers = [extract_answer(t) for t in texts]
    for k, truth in enumerate(truths):
        yield answers[k * n : (k + 1) * n], reference_answer(truth)
