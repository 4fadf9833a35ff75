"""The data that teaches the tiny Lion teacher to write instructions (benchmarks/lion_effect.py)."""

import importlib.util
import json
import re
from pathlib import Path

from ltune.problems import solve

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("lion_effect", ROOT / "benchmarks/lion_effect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _terms(question: str) -> int:
    return len(re.findall(r"\d+", question))  # difficulty 1: 3 terms, difficulty 2: 4


def test_teacher_data_mixes_answers_with_hard_and_easy_instruction_writing(tmp_path):
    lion_effect = _module()
    lion_effect.teacher_data(str(tmp_path / "t.jsonl"), n=40, seed=1)
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
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
