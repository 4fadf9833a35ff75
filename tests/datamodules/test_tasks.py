"""Tests of the embedded verifiable tasks."""

import random

import pytest

from ltune.datamodules.tasks import (
    CATEGORIES,
    FORMATS,
    TRACE_CATEGORIES,
    EmbeddedTasks,
    Problem,
    generate_problems,
    split_of,
)
from ltune.rewards import extract_answer, is_equivalent

COLUMNS = {
    "instruction": {"prompt", "response", "answer", "category"},
    "preference": {"prompt", "chosen", "rejected", "answer", "category"},
    "critique": {"question", "solution", "critique", "answer", "category"},
    "judgment": {"instruction", "response", "judgment", "label", "answer", "category"},
    "paraphrase": {"instruction", "paraphrase", "input", "output", "answer", "category"},
    "prompts": {"prompt", "answer", "category"},
    "phrasings": {"prompt", "answer", "category"},
    "pool": {"prompt", "response", "answer", "category", "quality", "noise", "duplicate", "difficulty"},
}


def test_problem_example_format():
    p = Problem("add", 2, "What is 23+58?", "81", "23+58=81. The answer is 81.", ("a", "b", "c"), "23+58")
    assert p.solution_for("80") == "23+58=80. The answer is 80."
    assert p.solution_for(p.answer) == p.solution


def test_generate_is_deterministic_per_seed():
    assert generate_problems(200, seed=3) == generate_problems(200, seed=3)
    assert generate_problems(200, seed=3) != generate_problems(200, seed=4)


@pytest.mark.parametrize("seed", [0, 1])
def test_splits_are_disjoint_and_follow_the_hash(seed):
    splits = {s: generate_problems(300, seed=seed, split=s, difficulties=(1, 2, 3)) for s in ("train", "val", "test")}
    keys = {s: {(p.category, p.question) for p in ps} for s, ps in splits.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    for s, ps in splits.items():
        assert len(keys[s]) == len(ps) == 300  # distinct within a split
        assert all(split_of(p) == s for p in ps)
    # a different seed draws other problems but never crosses splits
    other = {(p.category, p.question) for p in generate_problems(300, seed=seed + 10, split="test")}
    assert not other & keys["train"]


def test_all_categories_and_difficulties_appear():
    problems = generate_problems(600, seed=0, difficulties=(1, 2, 3))
    assert {p.category for p in problems} == set(CATEGORIES)
    assert {p.difficulty for p in problems} == {1, 2, 3}


def _mul(a: int, b: int) -> Problem:
    return Problem("mul", 1, f"What is {a}*{b}?", str(a * b), "", ())


def test_too_small_space_raises():
    with pytest.raises(ValueError, match="problems"):
        generate_problems(500, categories=["mul"], difficulties=[1])  # only 144 questions in all
    in_test = sum(split_of(_mul(a, b)) == "test" for a in range(1, 13) for b in range(1, 13))
    assert len(generate_problems(in_test, categories=["mul"], difficulties=[1], split="test")) == in_test
    with pytest.raises(ValueError, match="distinct"):  # the space is exhausted while sampling
        generate_problems(in_test + 1, categories=["mul"], difficulties=[1], split="test")
    with pytest.raises(ValueError, match="unknown categories"):
        generate_problems(10, categories=["divide"])
    with pytest.raises(ValueError, match="split"):
        generate_problems(10, split="dev")


def test_solutions_right_and_wrong_answers_wrong():
    rng = random.Random(0)
    for p in generate_problems(1200, seed=0, difficulties=(1, 2, 3)):
        assert len(p.paraphrases) >= 3 and p.question not in p.paraphrases
        assert p.solution.endswith(f"The answer is {p.answer}.")
        assert is_equivalent(extract_answer(p.solution), p.answer), p
        assert 10 <= len(p.question) <= 60 and len(p.solution) <= 60, p
        wrong = p.wrong_answer(rng)
        assert wrong != p.answer and not is_equivalent(wrong, p.answer), (p, wrong)
        assert not is_equivalent(extract_answer(p.solution_for(wrong)), p.answer)


def test_answers_are_correct_by_category():
    for p in generate_problems(300, seed=5, difficulties=(1, 2, 3)):
        expr = p.expression
        if p.category == "add":
            a, b = expr.split("+")
            assert int(p.answer) == int(a) + int(b)
        elif p.category == "sub":
            a, b = expr.split("-")
            assert int(p.answer) == int(a) - int(b) >= 0
        elif p.category == "mul":
            a, b = expr.split("*")
            assert int(p.answer) == int(a) * int(b)
        elif p.category == "compare":
            a, b = expr[4:-1].split(",")
            assert float(p.answer) == max(float(a), float(b)) and a != b
        elif p.category == "reverse":
            assert p.answer == expr[8:-1][::-1] != expr[8:-1]
        else:
            assert p.answer == "".join(sorted(expr[5:-1])) != expr[5:-1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_columns_and_nonempty(fmt):
    source = EmbeddedTasks(format=fmt, n=200, seed=1)
    rows = source.rows()
    assert len(rows) == 200
    assert rows == EmbeddedTasks(format=fmt, n=200, seed=1).rows()  # deterministic
    assert source.name == f"embedded:{fmt}/train/seed1"
    for row in rows:
        assert set(row) == COLUMNS[fmt]
        for key, value in row.items():
            if key == "input":
                assert value == ""
            elif key == "duplicate":
                assert isinstance(value, bool)
            elif key == "difficulty":
                assert value in (1, 2)
            else:
                assert isinstance(value, str) and value.strip(), (key, row)


def test_load_gives_a_dataset():
    ds = EmbeddedTasks(format="prompts", n=20).load()
    assert len(ds) == 20 and set(ds.column_names) == COLUMNS["prompts"]


def test_preference_chosen_right_rejected_wrong():
    for row in EmbeddedTasks(format="preference", n=300).rows():
        assert row["chosen"] != row["rejected"]
        assert is_equivalent(extract_answer(row["chosen"]), row["answer"])
        assert not is_equivalent(extract_answer(row["rejected"]), row["answer"])


def test_critique_and_judgment_labels_match_content():
    rows = EmbeddedTasks(format="critique", n=200).rows()
    wrong = [r for r in rows if r["critique"].endswith("Conclusion: wrong")]
    assert len(wrong) == 100
    for r in rows:
        right = is_equivalent(extract_answer(r["solution"]), r["answer"])
        assert r["critique"].endswith("Conclusion: right" if right else "Conclusion: wrong")
        if not right:
            assert f"={r['answer']}." in r["critique"]  # names the correct result
    rows = EmbeddedTasks(format="judgment", n=200).rows()
    assert sum(r["label"] == "negative" for r in rows) == 100
    for r in rows:
        right = is_equivalent(extract_answer(r["response"]), r["answer"])
        assert r["label"] == ("positive" if right else "negative")


def test_paraphrase_differs_from_instruction():
    for row in EmbeddedTasks(format="paraphrase", n=100).rows():
        assert row["paraphrase"] != row["instruction"]
        assert is_equivalent(extract_answer(row["output"]), row["answer"])


def test_instruction_splits_disjoint():
    train = {r["prompt"] for r in EmbeddedTasks(n=500, split="train").rows()}
    test = {r["prompt"] for r in EmbeddedTasks(n=300, split="test").rows()}
    assert not train & test


def test_pool_mixture():
    source = EmbeddedTasks(format="pool", n=1000, difficulties=[1, 2, 3], noise_fraction=0.2, duplicate_fraction=0.1)
    rows = source.rows()
    duplicates = [r for r in rows if r["duplicate"]]
    originals = [r for r in rows if not r["duplicate"]]
    assert len(duplicates) == 100
    assert sum(r["quality"] == "noisy" for r in originals) == 180  # 20% of the 900 distinct rows
    assert {r["difficulty"] for r in rows} == {1, 2, 3} and len({r["category"] for r in rows}) == len(CATEGORIES)
    by_response = {}
    for r in originals:
        by_response.setdefault(r["response"], []).append(r)
    for d in duplicates:  # each duplicate repeats an original's response and answer
        assert any(o["answer"] == d["answer"] for o in by_response[d["response"]])
    for r in rows:
        verified = is_equivalent(extract_answer(r["response"]), r["answer"])
        assert verified == (r["quality"] == "good"), r


def test_bad_arguments():
    with pytest.raises(ValueError, match="format"):
        EmbeddedTasks(format="chat")
    with pytest.raises(ValueError, match="noise_fraction"):
        EmbeddedTasks(format="pool", noise_fraction=1.5)


def test_sum_trace_is_a_correct_running_sum_in_varied_orders():
    problems = generate_problems(300, seed=2, categories=["sum"], difficulties=(1, 2, 3))
    first_terms_in_question_order = 0
    rng = random.Random(0)
    for p in problems:
        terms = [int(t) for t in p.paraphrases[1][len("Compute ") : -1].split("+")]  # "Compute 12+17+14."
        assert len(terms) == (3 if p.difficulty == 1 else 4)
        steps = [s.split("=") for s in p.solution.split(". The answer")[0].split(", ")]
        used, total = [], None
        for left, result in steps:
            a, b = (int(x) for x in left.split("+"))
            assert total is None or a == total, p  # each step starts from the previous result
            used += [b] if total is not None else [a, b]
            total = int(result)
            assert total == a + b, p
        assert sorted(used) == sorted(terms) and total == sum(terms) == int(p.answer), p
        assert len(p.solution) <= 60 and p.wrong_answer(rng) != p.answer
        first_terms_in_question_order += used == terms
    assert 0 < first_terms_in_question_order < len(problems) / 3  # the order is drawn, not the question's


def test_sum_is_only_drawn_when_named():
    assert "sum" not in {p.category for p in generate_problems(600, seed=0, difficulties=(1, 2, 3))}
    assert "sum" not in CATEGORIES


def test_solve_reads_every_phrasing_of_every_category_and_only_those():
    from ltune.problems import solve

    for category in CATEGORIES + TRACE_CATEGORIES:
        for difficulty in (1, 2, 3):
            for p in generate_problems(20, seed=3, split="train", categories=[category], difficulties=[difficulty]):
                for question in (p.question, *p.paraphrases):
                    assert solve(question) == p.answer, (category, question)
    # questions no generator drew (a model's new instructions), worked by hand
    assert solve("What is the sum of 1, 2, 3, 4 and 5?") == "15" and solve("Compute 7+8+9.") == "24"
    assert solve("Subtract 9 from 4.") == "-5" and solve("Pick the larger of 3.5 and 3.45.") == "3.5"
    assert solve(" Spell abc in reverse. ") == "cba" and solve("What is dcba sorted?") == "abcd"
    for text in (
        "What is the sum of 3 and?",
        "Add up 3, 12 and 7",
        "What is 3+4? Think.",
        "",
        "Sort the letters of ABC.",
    ):
        assert solve(text) is None, text


def test_paraphrase_rows_draw_only_the_named_paraphrases():
    rows = EmbeddedTasks(format="paraphrase", n=200, paraphrases=[0, 1]).rows()
    problems = EmbeddedTasks(format="paraphrase", n=200).problems()
    seen = {p.paraphrases.index(r["paraphrase"]) for r, p in zip(rows, problems)}
    assert seen == {0, 1}  # the third paraphrase is held out of every row
    assert {
        p.paraphrases.index(r["paraphrase"]) for r, p in zip(EmbeddedTasks(format="paraphrase", n=200).rows(), problems)
    } == {0, 1, 2}
    with pytest.raises(ValueError, match="paraphrases"):
        EmbeddedTasks(format="paraphrase", paraphrases=[3])


def test_phrasings_rows_give_every_problem_in_every_phrasing_in_turn():
    rows = EmbeddedTasks(format="phrasings", n=10, split="val").rows()
    problems = EmbeddedTasks(format="paraphrase", n=3, split="val").problems()  # 10 rows need 3 problems
    expected = [
        {"prompt": q, "answer": p.answer, "category": f"phrasing{k}"}
        for p in problems
        for k, q in enumerate((p.question, *p.paraphrases))
    ][:10]
    assert rows == expected
    assert [r["category"] for r in rows[:4]] == ["phrasing0", "phrasing1", "phrasing2", "phrasing3"]
    assert len({r["answer"] for r in rows[:4]}) == 1 and len({r["prompt"] for r in rows[:4]}) == 4


def test_pool_noise_kinds_are_what_they_say():
    kinds = ["wrong", "garbled", "truncated", "off_task"]
    tasks = EmbeddedTasks(format="pool", n=800, noise_fraction=0.5, duplicate_fraction=0.0, noise_kinds=kinds)
    rows = tasks.rows()
    by_prompt = {p.question: p for p in tasks.problems(800)}
    solutions = {p.solution: p for p in by_prompt.values()}
    seen = set()
    for r in rows:
        p = by_prompt[r["prompt"]]
        assert (r["quality"] == "good") == (r["noise"] == "none")
        if r["noise"] != "none":
            assert not is_equivalent(extract_answer(r["response"]) or "", p.answer), r  # never verifies
            seen.add(r["noise"])
        if r["noise"] == "truncated":
            assert p.solution.startswith(r["response"]) and p.answer not in r["response"]
        if r["noise"] == "off_task":
            assert solutions[r["response"]].category != p.category
        if r["noise"] == "garbled":
            assert sorted(r["response"]) != sorted(p.solution) and p.answer.lower() not in r["response"].lower()
    assert seen == set(kinds)
    assert {r["noise"] for r in EmbeddedTasks(format="pool", n=400).rows()} == {"none", "wrong", "garbled"}  # default
    with pytest.raises(ValueError, match="noise_kinds"):
        EmbeddedTasks(format="pool", noise_kinds=["typo"])
