"""The rows that teach the tiny Lion teacher to write instructions (benchmarks/lion_effect.py, the lab side)."""

import re

from benchmarks.lion_effect import lion_teacher_rows
from ltune.problems import solve


def _terms(question: str) -> int:
    return len(re.findall(r"\d+", question))  # difficulty 1: 3 terms, difficulty 2: 4


def test_teacher_rows_mix_answers_with_hard_and_easy_instruction_writing():
    rows = lion_teacher_rows(n=40, seed=1)
    hard = [r for r in rows if r["prompt"].startswith("Write a similar problem: ")]
    easy = [r for r in rows if r["prompt"].startswith("Write a rarer problem: ")]
    answers = [r for r in rows if r not in hard and r not in easy]
    assert (len(answers), len(hard), len(easy)) == (40, 20, 20)
    for r in answers:  # worked solutions whose final answer is the question's
        assert r["response"].endswith(f"The answer is {solve(r['prompt'])}.")
    for rows_, same in ((hard, True), (easy, False)):
        for r in rows_:
            seed_question = r["prompt"].split(": ", 1)[1]
            assert solve(r["response"]) is not None and r["response"] != seed_question
            assert (_terms(seed_question) == _terms(r["response"])) is same, r  # hard keeps the difficulty
