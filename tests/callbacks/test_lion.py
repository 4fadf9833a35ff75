"""Lion: two-order discrimination and the hard threshold (scripted judge), the instruction filters and ROUGE-L,
pool bookkeeping, an offline end-to-end run through the CLI, and the teacher behind a real 127.0.0.1 server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning_utilities.core.apply_func import apply_to_collection
from rouge_score import rouge_scorer

from ltune.backbone import Backbone
from ltune.callbacks.lion import Lion, _rouge_l, keep_instruction, truncated
from ltune.callbacks.rounds import read_jsonl
from ltune.cli import main
from ltune.io import atomic_write_jsonl
from ltune.judges import APIJudge, LMJudge, PairJudge, VerifierJudge
from tests.callbacks.conftest import ROOT
from tests.conftest import cpu_env


class Scripted(PairJudge):
    """Rates an answer 9 if it starts with "good", else 5, plus 1 in slot 1 (a position bias); writes scripted text."""

    def __init__(self, texts=None):
        super().__init__()
        self.texts = texts or {"hard": [], "easy": []}

    def rating(self, contexts):
        out = []
        for c in contexts:
            slot = int(re.search(r"Score of the Assistant (\d): $", c).group(1))
            answer = re.search(rf"Assistant {slot}'s Answer\]\n(.*)\n", c).group(1)
            out.append((9.0 if answer.startswith("good") else 5.0) + (1.0 if slot == 1 else 0.0))
        return torch.tensor(out)

    def generate(self, prompts, max_new_tokens=256, temperature=0.0):
        if "#New Instruction#" in prompts[0]:
            queue = self.texts["easy" if "more rare" in prompts[0] else "hard"]
            return [queue.pop(0) if queue else "" for _ in prompts]
        return [f"good answer to {p.split(chr(10))[1]}" for p in prompts]


def test_discrimination_averages_both_orders_and_applies_the_gap_threshold(monkeypatch):
    lion = Lion(instructions="unused.jsonl", teacher=Scripted(), threshold=1.0)
    student = {"q1": "bad", "q2": "good too"}
    monkeypatch.setattr(lion, "_student", lambda trainer, module, prompts: [student[p] for p in prompts])
    items = [{"prompt": "q1", "response": "good t1"}, {"prompt": "q2", "response": "good t2"}]
    out = lion.e_step(None, None, 1, items)
    # q1: teacher 10 (slot 1) and 9 (slot 2) -> 9.5; student 5 (slot 2) and 6 (slot 1) -> 5.5; gap 4 -> hard
    assert (out[0]["s_teacher"], out[0]["s_student"], out[0]["label"]) == (9.5, 5.5, "hard")
    # q2: both "good": the position bias cancels, gap 0 -> easy
    assert (out[1]["s_teacher"], out[1]["s_student"], out[1]["label"]) == (9.5, 9.5, "easy")
    nan_judge = Scripted()
    nan_judge.rating = lambda contexts: torch.full((len(contexts),), float("nan"))
    lion.referee = nan_judge
    assert [o["label"] for o in lion.e_step(None, None, 1, items)] == ["unjudged", "unjudged"]


def test_a_verifier_referee_marks_hard_where_only_the_teacher_is_right(monkeypatch):
    lion = Lion(instructions="unused.jsonl", teacher=Scripted(), referee=VerifierJudge(), threshold=1.0)
    questions = ["Add up 3, 12 and 7.", "What is 2+2?", "Write a story.", "Compute 1+2+3."]
    student = dict(zip(questions, ["The answer is 21.", "2+2=4. The answer is 4.", "Once.", "The answer is 6."]))
    monkeypatch.setattr(lion, "_student", lambda trainer, module, prompts: [student[p] for p in prompts])
    teacher = ["12+7=19, 19+3=22. The answer is 22.", "The answer is 4.", "Once upon a time.", "The answer is 7."]
    out = lion.e_step(None, None, 1, [{"prompt": q, "response": t} for q, t in zip(questions, teacher)])
    # teacher right, student wrong -> gap 9 (hard); both right -> 0 (easy); unreadable question -> unjudged;
    # only the student right -> gap -9 (easy)
    assert [(o["s_teacher"], o["s_student"]) for o in out if o["label"] != "unjudged"] == [(10, 1), (10, 10), (1, 10)]
    assert [o["label"] for o in out] == ["hard", "easy", "unjudged", "easy"]


def test_instruction_filters_and_rouge_l():
    assert keep_instruction("Which is larger, 12 or 40?")
    assert not keep_instruction("Write a new instruction about sums.")  # mentions "instruction"
    assert not keep_instruction("What is 2+2?")  # three words
    assert not keep_instruction("- Which is larger, 12 or 40?") and not keep_instruction("Ünïcode is not ascii here")
    tok = rouge_scorer.RougeScorer(["rougeL"])._tokenizer.tokenize
    # LCS(the cat sat on the mat, the cat on a mat) = 4: P = 4/5, R = 4/6, F = 2PR / (P + R) = 8/11
    assert _rouge_l(tok("the cat sat on the mat"), tok("the cat on a mat")) == pytest.approx(8 / 11)


def test_pool_update_adds_filtered_new_instructions_to_the_train_pool(tmp_path):
    new = {"hard": ["Which is larger, 12 or 40 or 7?",  # kept
                    "Which is larger, 12 or 40 or 7?",  # same as the one just accepted: ROUGE-L 1 -> rejected
                    "Tell me the instruction please now"],  # contains "instruction" -> rejected; a third pass: ""
           "easy": ["Reverse the letters of the word cat.", "Spell the word dog backwards for me."]}  # fmt: skip
    lion = Lion(instructions="unused.jsonl", teacher=Scripted(new), num_new=4, instruction_tokens=16)
    lion.dir = tmp_path
    atomic_write_jsonl(tmp_path / "round_0/train.jsonl", [{"prompt": "q0", "response": "good a0"}])
    lion.paths[0] = str(tmp_path / "round_0/train.jsonl")
    produced = [{"prompt": "Which is larger, 3 or 9?", "label": "hard", "s_teacher": 9.0, "s_student": 5.0},
                {"prompt": "Write cat backwards.", "label": "easy", "s_teacher": 9.0, "s_student": 9.0}]  # fmt: skip
    rows = lion.train_rows(None, None, 1, produced)
    added = ["Which is larger, 12 or 40 or 7?", "Reverse the letters of the word cat.",
             "Spell the word dog backwards for me."]  # fmt: skip
    assert [r["prompt"] for r in rows] == ["q0", *added]
    assert rows[1]["response"].startswith("good answer to")
    assert [r["prompt"] for r in read_jsonl(tmp_path / "round_1/cache.jsonl")] == added  # the next Cache Pool
    metrics = lion.round_metrics(1, produced, rows)
    assert metrics["hard"] == 1 and metrics["easy"] == 1 and metrics["new_hard"] == 1 and metrics["new_easy"] == 2
    assert metrics["rouge_rejected"] == 1 and metrics["train_pool"] == 4


def test_instructions_cut_by_the_token_budget_are_dropped():
    assert truncated("Which is larger, 12 or", True)  # cut before the first line ended
    assert not truncated("Which is larger, 12 or 40?\nThe answer", True)  # the line ended, later text was cut
    assert not truncated("Which is larger, 12 or 40?", False)

    class Cutting(Scripted):  # reports its first hard instruction as cut by max_new_tokens
        def complete(self, prompts, max_new_tokens=256, temperature=0.0):
            texts = self.generate(prompts, max_new_tokens, temperature)
            return texts, [t == "Which is larger, 12 or 40" for t in texts]

    new = {"hard": ["Which is larger, 12 or 40", "Which is smaller, 3 or 8 or 5?"], "easy": []}
    lion = Lion(instructions="unused.jsonl", teacher=Cutting(new), num_new=2, instruction_tokens=16)
    lion._stats = {"truncated": 0.0, "rouge_rejected": 0.0}
    assert lion._generate(["Which is larger, 3 or 9?"], lion.hard_template, 1, []) == ["Which is smaller, 3 or 8 or 5?"]
    assert lion._stats["truncated"] == 1


def _teacher_prompts() -> list[str]:
    """Two answer prompts of the solver's format, of equal length (no padding: local and served greedy agree)."""
    return [f"Q: {q}\nA: " for q in ("Which is larger, 3 or 9?", "Which is larger, 7 or 2?")]


def test_local_teacher_reports_completions_cut_by_max_new_tokens(solver_dir):
    teacher = LMJudge(backbone=Backbone(name_or_path=str(solver_dir)))
    texts, cut = teacher.complete(_teacher_prompts(), max_new_tokens=64)
    assert cut == [False, False] and all(t.endswith(".") for t in texts)  # stopped by the end-of-sequence token
    short, cut = teacher.complete(_teacher_prompts(), max_new_tokens=3)
    assert cut == [True, True] and short == [t[:3] for t in texts]  # the same greedy text, cut after 3 bytes
    lion = Lion(instructions="unused.jsonl", teacher=teacher, num_new=4, instruction_tokens=3)
    lion._stats = {"truncated": 0.0, "rouge_rejected": 0.0}
    assert lion._generate(["Which is larger, 3 or 9?"], lion.hard_template, 2, []) == []
    assert lion._stats["truncated"] >= 2  # every candidate of every pass was cut


def test_api_teacher_reports_finish_reason_length(solver_dir):
    server = subprocess.Popen([sys.executable, "-m", "tests.openai_server", "0", str(solver_dir)], cwd=ROOT,
                              env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        teacher = APIJudge(model="solver", base_url=f"http://127.0.0.1:{int(server.stdout.readline())}/v1")
        local = LMJudge(backbone=Backbone(name_or_path=str(solver_dir)))
        for budget in (64, 3):  # finish_reason "stop" / "length", as the local judge reads its samples
            assert teacher.complete(_teacher_prompts(), budget) == local.complete(_teacher_prompts(), budget)
        assert teacher.complete(_teacher_prompts(), 3)[1] == [True, True]
        lion = Lion(instructions="unused.jsonl", teacher=teacher, num_new=4, instruction_tokens=3)
        lion._stats = {"truncated": 0.0, "rouge_rejected": 0.0}
        assert lion._generate(["Which is larger, 3 or 9?"], lion.hard_template, 2, []) == []
        assert lion._stats["truncated"] >= 2
    finally:
        server.kill()
        server.wait()


def lion_config(tmp_path: Path, teacher: dict, name: str = "lion", config: str = "lion.yaml") -> Path:
    cfg = yaml.safe_load((ROOT / "configs/loops" / config).read_text())
    loop = cfg["trainer"]["callbacks"][-1]["init_args"]  # Lion is last
    loop["instructions"]["init_args"].update(n=8)
    loop.update(teacher=teacher, rounds=2, num_new=4, answer_tokens=16, instruction_tokens=16, epochs_per_round=1,
                chunk_size=4)  # fmt: skip
    cfg["trainer"]["logger"] = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                 "init_args": {"save_dir": str(tmp_path / "runs"), "name": name}}]  # fmt: skip
    cfg["trainer"]["enable_progress_bar"] = False
    tiny = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}
    cfg["model"]["init_args"]["backbone"].update(name_or_path="tiny", tiny=tiny)
    cfg["model"]["init_args"]["max_new_tokens"] = 16
    cfg["data"]["init_args"].update(batch_size=4, max_length=96)
    cfg["data"]["init_args"]["eval_prompts"]["init_args"].update(n=4)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _check_run(run: Path) -> list[dict]:
    history = json.loads((run / "rounds/rounds.json").read_text())
    assert [h["round"] for h in history] == [0, 1]
    assert history[0]["train_pool"] == 8
    assert history[1]["hard"] + history[1]["easy"] + history[1]["unjudged"] == 8
    pool = read_jsonl(run / "rounds/round_1/train.jsonl")
    assert len(pool) == 8 + history[1]["new_hard"] + history[1]["new_easy"] == history[1]["train_pool"]
    assert pool[:8] == read_jsonl(run / "rounds/round_0/train.jsonl")
    return history


def test_lion_config_runs_offline_through_the_cli(tmp_path, solver_dir, one_thread):
    teacher = {"class_path": "ltune.judges.LMJudge", "init_args": {"backbone": {"name_or_path": str(solver_dir)}}}
    main(["fit", "--config", str(lion_config(tmp_path, teacher))])
    history = _check_run(tmp_path / "runs/lion/version_0")
    saved = torch.load(tmp_path / "runs/lion/version_0/rounds/last.ckpt", map_location="cpu", weights_only=False)
    held = []
    apply_to_collection(saved["callbacks"], torch.Tensor, held.append)
    # the callbacks' state holds RNG states (uint8) and scores, no teacher or referee weights
    assert held and all(t.dtype == torch.uint8 or t.numel() == 1 for t in held)
    assert all(k.startswith("model.") for k in saved["state_dict"])  # the policy's weights only
    assert history[1]["unjudged"] == 0  # a local judge always yields a rating (an expectation over 1..10)
    assert 1 <= history[1]["referee_teacher"] <= 10 and 1 <= history[1]["referee_student"] <= 10


def test_lion_sum_config_runs_offline_through_the_cli_with_the_verifier_referee(tmp_path, solver_dir, one_thread):
    teacher = {"class_path": "ltune.judges.LMJudge", "init_args": {"backbone": {"name_or_path": str(solver_dir)}}}
    main(["fit", "--config", str(lion_config(tmp_path, teacher, name="lion_sum", config="lion_sum.yaml"))])
    run = tmp_path / "runs/lion_sum/version_0"
    history = _check_run(run)
    assert history[1]["unjudged"] == 0  # every sum question is readable by problems.solve
    judged = read_jsonl(run / "rounds/round_1/chunk_00000.jsonl") + read_jsonl(run / "rounds/round_1/chunk_00001.jsonl")
    for row in judged:  # verifier ratings: 10 for a right answer, 1 otherwise; hard iff only the teacher is right
        assert {row["s_teacher"], row["s_student"]} <= {1.0, 10.0}
        assert (row["label"] == "hard") == (row["s_teacher"] - row["s_student"] == 9.0)


def test_lion_with_an_api_teacher_against_a_real_local_server(tmp_path, one_thread, monkeypatch):
    """Also: the API key comes from the environment and lands in no file the run writes."""
    key = "sk-ltune-test-9f3c2e7a51"
    monkeypatch.setenv("LTUNE_TEST_API_KEY", key)
    server = subprocess.Popen([sys.executable, "-m", "tests.openai_server"], cwd=ROOT, env=cpu_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1"
        judge = APIJudge(model="micro", base_url=url, api_key_env="LTUNE_TEST_API_KEY")
        assert judge.client.api_key == key
        teacher = {"class_path": "ltune.judges.APIJudge",
                   "init_args": {"model": "micro", "base_url": url, "api_key_env": "LTUNE_TEST_API_KEY"}}  # fmt: skip
        main(["fit", "--config", str(lion_config(tmp_path, teacher, name="lion_api"))])
        run = tmp_path / "runs/lion_api/version_0"
        answers = read_jsonl(run / "rounds/round_0/train.jsonl")
        asked = [f"Q: {a['prompt']}\nA: " for a in answers]
        assert [a["response"] for a in answers] == judge.generate(asked, max_new_tokens=16)  # the server's answers
    finally:
        server.kill()
        server.wait()
    _check_run(run)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written) and any(p.suffix == ".ckpt" for p in written)
    assert [p for p in written if key.encode() in p.read_bytes()] == []
    assert "LTUNE_TEST_API_KEY" in (run / "config.yaml").read_text()  # the variable's name is what is recorded


def test_api_rating_reads_a_leading_integer_from_1_to_10():
    from ltune.judges.api import _RATING

    reads = [_RATING.match(t) for t in ("7", " 10/10", "3. fine", "0", "11", "x9")]
    assert [m.group(1) if m else None for m in reads] == ["7", "10", "3", None, None, None]


def test_every_loop_config_has_a_cli_run_test():
    # rest_em.yaml: test_rest_em.py (and the SIGKILL resume test); rest_em_kto.yaml: test_rest_em.py; lion.yaml: the
    # two CLI runs above
    # lion_sum.yaml: the verifier-referee run above; rest_em_smollm2.yaml and lion_smollm2.yaml:
    # tests/real/test_smollm2_runs.py (shrunk)
    assert sorted(p.name for p in (ROOT / "configs/loops").glob("*.yaml")) == [
        "lion.yaml",
        "lion_smollm2.yaml",
        "lion_sum.yaml",
        "rest_em.yaml",
        "rest_em_kto.yaml",
        "rest_em_smollm2.yaml",
    ]


def test_instructions_and_answers_use_their_own_temperatures(tmp_path):
    class Recording(Scripted):
        def __init__(self, texts):
            super().__init__(texts)
            self.temperatures: list[tuple[str, float]] = []

        def generate(self, prompts, max_new_tokens=256, temperature=0.0):
            kind = "instruction" if "#New Instruction#" in prompts[0] else "answer"
            self.temperatures.append((kind, temperature))
            return super().generate(prompts, max_new_tokens, temperature)

    new = {"hard": ["Which is larger, 12 or 40 or 7?"], "easy": []}
    teacher = Recording(new)
    lion = Lion(instructions="unused.jsonl", teacher=teacher, num_new=2, instruction_tokens=16,
                teacher_temperature=0.7, instruction_temperature=0.3)  # fmt: skip
    lion.dir = tmp_path
    atomic_write_jsonl(tmp_path / "round_0/train.jsonl", [])
    lion.paths[0] = str(tmp_path / "round_0/train.jsonl")
    lion.train_rows(None, None, 1, [{"prompt": "Which is larger, 3 or 9?", "label": "hard"}])
    assert set(teacher.temperatures) == {("instruction", 0.3), ("answer", 0.7)}


@pytest.mark.parametrize(
    "a, b",
    [("Which is larger, 12 or 40?", "Which is larger, 40 or 12?"), ("What is 3+4?", "Sort the letters of dcba."),
     ("add 2 and 2", "add 2 and 2"), ("", "anything"), ("a b c d e", "a x c y e z")],
)  # fmt: skip
def test_rouge_l_equals_rouge_scores_public_scorer(a, b):
    from rouge_score.rouge_scorer import RougeScorer
    from rouge_score.tokenizers import DefaultTokenizer

    from ltune.callbacks.lion import _rouge_l

    tok = DefaultTokenizer(use_stemmer=False)
    want = RougeScorer(["rougeL"], use_stemmer=False).score(b, a)["rougeL"].fmeasure
    assert _rouge_l(tok.tokenize(a), tok.tokenize(b)) == pytest.approx(want, abs=1e-12)
