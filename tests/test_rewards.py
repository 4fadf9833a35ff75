"""Tests of answer extraction, equivalence, majority vote and the verifier reward."""

import threading

import pytest

from ltune.rewards import extract_answer, is_equivalent, majority_vote, normalize_answer, verifier_reward


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so the result is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{1} first, then \boxed{x^{2}+{1}} finally", "x^{2}+{1}"),
        (r"\boxed{7} and the answer is 8", "7"),  # boxed wins over "the answer is"
        ("23+58=81. The answer is 81.", "81"),
        ("The answer is 42.", "42"),
        ("the answer is 3. The answer is tac. Done.", "tac"),
        ("THE ANSWER IS 3.5.", "3.5"),
        ("The answer is $7$.", "7"),
        ("we get 12, then 58-23=35", "35"),
        ("What is 58-23", "23"),
        ("it drops to -5", "-5"),
        ("in all 1,234 apples", "1,234"),
        ("no digits here", None),
        ("", None),
        (r"\boxed{unclosed", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" 4.0 ", "4"), ("$1,234$", "1234"), ("Tac.", "tac"), ("-0.0", "0"), ("3.50", "3.5"), ("1 2", "12")],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        ("0.5", r"\frac{1}{2}", True),
        ("1/2", "0.5", True),
        ("4.0", "4", True),
        ("1,234", "1234", True),
        ("tac", "tac", True),
        ("TAC", "tac", True),
        ("tac", "cat", False),  # sympy would read t*a*c == c*a*t
        ("abcd", "abdc", False),
        ("81", "80", False),
        ("3.45", "3.5", False),
        (None, "1", False),
        ("1", None, False),
        ("", "", False),
    ],
)
def test_is_equivalent(pred, ref, expected):
    assert is_equivalent(pred, ref) is expected


def test_is_equivalent_outside_the_main_thread():
    results = []
    thread = threading.Thread(target=lambda: results.append(is_equivalent("0.25", r"\frac{1}{4}")))
    thread.start()
    thread.join()
    assert results == [True]


def test_majority_vote_over_equivalence_classes():
    # {0.5, \frac{1}{2}, 1/2} is one class of 3 of the 6 answers, beating {1, 1.0} (2)
    assert majority_vote(["1", "0.5", r"\frac{1}{2}", "1.0", "1/2", None]) == ("0.5", 0.5)
    # raw-string counting would pick "7" (2 votes); classes give 8 (3 votes)
    assert majority_vote(["7", "8", "7", "8.0", "$8$"]) == ("8", 0.6)


def test_majority_vote_ties_and_none():
    assert majority_vote(["b", "a", "a", "b"]) == ("b", 0.5)  # tie -> first seen
    assert majority_vote([None, None, "x"]) == ("x", pytest.approx(1 / 3))
    assert majority_vote([None, None]) == (None, 0.0)
    assert majority_vote([]) == (None, 0.0)


def test_verifier_reward():
    completions = ["23+58=81. The answer is 81.", r"\boxed{81.0}", "The answer is 80.", "no idea"]
    assert verifier_reward(completions, ["81"] * 4) == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        verifier_reward(["a"], ["a", "b"])


def test_answer_groups_pair_each_prompts_answers_with_its_reference():
    from ltune.rewards import answer_groups

    texts = ["The answer is 4.", "5", "no number here", "The answer is cba."]
    groups = list(answer_groups(texts, 2, ["4", None]))
    assert groups == [(["4", "5"], "4"), ([None, "cba"], None)]


@pytest.mark.parametrize(
    ("text", "strict", "lenient"),
    [
        ("3 is larger than 39.", None, "39"),  # a number picked out of a false sentence is no answer
        ("39 is larger than 3. The answer is 39.", "39", "39"),
        ("81", "81", "81"),
        ("**tac**.", "tac", "tac"),
        (r"$\frac{1}{2}$.", r"\frac{1}{2}", r"\frac{1}{2}"),
        ("She has 5 left.\n#### 5", "5", "5"),
        ("I think so", None, None),
        ("19+16=3", None, "3"),  # an equation is a claim, not a bare value: strict reads no answer
        ("16+14", None, "14"),  # the question's expression is not a value (math_verify would evaluate it)
        ("3/4", "3/4", "3/4"),
        (r"3+\sqrt{2}", r"3+\sqrt{2}", r"3+\sqrt{2}"),
        (r"\boxed{unclosed", None, None),
    ],
)
def test_strict_reads_only_a_stated_answer_or_a_bare_value(text, strict, lenient):
    from ltune.rewards import final_answer

    assert final_answer(text) == strict
    assert final_answer(text, strict=False) == extract_answer(text) == lenient


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
        (r"The sum is $\frac{1}{2}+\frac{1}{4}$, so it is $\boxed{\frac{3}{4}}$.", r"\frac{3}{4}"),
        ("23+58=81. The answer is 81.", "81"),
        ("  1,234 ", "1,234"),
        ("tac", "tac"),
    ],
)
def test_references_are_read_in_the_forms_public_sets_use(reference, expected):
    from ltune.rewards import answer_matches, reference_answer

    assert reference_answer(reference) == expected
    assert answer_matches(f"The answer is {expected}.", reference)
    assert not answer_matches("The answer is 7.", reference)
