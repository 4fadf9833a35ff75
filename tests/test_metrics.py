"""Tests of the answer metrics against hand computations."""

import math

import pytest
import torch

from ltune.metrics import ExactMatch, MajorityAtN, PassAtK, pass_at_k


def test_exact_match_accumulates_over_two_updates():
    metric = ExactMatch()
    metric.update(["The answer is 81.", "The answer is 7."], ["81", "8"])  # 1 / 2
    metric.update([r"\boxed{\frac{1}{2}}", "reverse(cat)=tac. The answer is tac.", "nothing"], ["0.5", "tac", "3"])
    assert metric.compute().item() == pytest.approx(3 / 5)
    metric.reset()
    assert metric.compute().item() == 0.0


def test_exact_match_per_category():
    metric = ExactMatch(categories=["add", "reverse", "sort"])
    completions = ["1+1=2. The answer is 2.", "The answer is 5.", "The answer is tac."]
    metric.update(completions, ["2", "4", "tac"], ["add", "add", "reverse"])
    result = metric.compute()
    assert result["all"].item() == pytest.approx(2 / 3)
    assert result["add"].item() == pytest.approx(0.5) and result["reverse"].item() == 1.0
    assert math.isnan(result["sort"].item())
    with pytest.raises(ValueError):
        metric.update(["x"], ["y"])


def test_majority_at_n():
    metric = MajorityAtN()
    samples = [
        ["The answer is 4.", "The answer is 4.0", "The answer is 5."],  # majority 4 -> right
        ["The answer is cat.", "The answer is tac.", "The answer is cat."],  # majority cat -> wrong
    ]
    metric.update(samples, ["4", "tac"])
    metric.update([["x", "The answer is 0.5", r"\boxed{\frac{1}{2}}"]], ["1/2"])  # right
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_pass_at_k_formula_by_hand():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # pass@1 = c/n
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # n - c < k
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_pass_at_k_metric():
    right, wrong = "The answer is 1.", "The answer is 2."
    metric = PassAtK(k=2)
    metric.update([[right, right, wrong, wrong, wrong], [wrong] * 4], ["1", "1"])  # 0.7 and 0.0
    metric.update([[right, right, right, wrong]], ["1"])  # 1.0
    assert metric.compute().item() == pytest.approx((0.7 + 0.0 + 1.0) / 3)
    assert isinstance(metric.compute(), torch.Tensor)


def test_exact_match_is_strict_by_default_and_reads_gsm8k_references():
    gsm8k = "Betty has 100/2 = <<100/2=50>>50 dollars.\nShe needs 100-50-15-30 = <<100-50-15-30=5>>5 more.\n#### 5"
    replies = ["3 is larger than 39.", "The answer is 5.", "5", "She needs 5 more dollars."]
    references = ["39", gsm8k, gsm8k, gsm8k]
    strict, lenient = ExactMatch(), ExactMatch(strict=False)
    strict.update(replies, references)
    lenient.update(replies, references)
    assert strict.compute().item() == pytest.approx(2 / 4)  # the stated 5 and the bare 5
    assert lenient.compute().item() == pytest.approx(4 / 4)  # also the last numbers: 39 of a false sentence, 5


def test_majority_and_pass_at_k_read_answers_as_exact_match_does():
    samples = [["9 is larger than 12.", "9 is larger than 12.", "The answer is 9."]]  # the truth is 12
    strict_maj, lenient_maj = MajorityAtN(), MajorityAtN(strict=False)
    strict_maj.update(samples, ["12"])
    lenient_maj.update(samples, ["12"])
    assert strict_maj.compute().item() == 0.0  # one stated answer: 9
    assert lenient_maj.compute().item() == 1.0  # two last numbers 12 outvote the 9
    strict_pass, lenient_pass = PassAtK(1), PassAtK(1, strict=False)
    strict_pass.update(samples, ["12"])
    lenient_pass.update(samples, ["12"])
    assert strict_pass.compute().item() == 0.0 and lenient_pass.compute().item() == pytest.approx(2 / 3)
