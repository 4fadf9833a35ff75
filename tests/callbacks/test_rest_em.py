"""ReST-EM: the E-step's filter and cap (hand-built samples), and the config through the real CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ltune.callbacks import rest_em
from ltune.callbacks.rest_em import ReSTEM
from ltune.cli import main
from ltune.datamodules import InstructionData, UnpairedPreferenceData
from ltune.datamodules.batching import pad_left
from ltune.generation import HFSampler, Samples
from ltune.rewards import extract_answer, is_equivalent
from tests.callbacks.conftest import rest_em_config
from tests.conftest import micro_backbone

ROOT = Path(__file__).resolve().parents[2]


def test_e_step_keeps_verified_stopped_solutions_capped_per_problem(monkeypatch):
    backbone = micro_backbone()
    tok = backbone.tokenizer
    data = InstructionData(max_length=64)
    data.tokenizer = tok
    items = [{"prompt": "What is 3+4?", "answer": "7", "category": "add"},
             {"prompt": "What is 2+2?", "answer": "4", "category": "add"}]  # fmt: skip
    texts = [("3+4=7. The answer is 7.", True), ("3+4=7. The answer is 7.", True), ("3+4=8. The answer is 8.", True),
             ("3+4=7. The answer is 7.", False),  # cut by max_new_tokens: never kept
             ("2+2=5. The answer is 5.", True), ("2+2=3.", True), ("", True), ("The answer is 44", True)]  # fmt: skip

    def fake_sample_groups(sampler, model, prompt_ids, prompt_mask, *, num_samples, **kw):
        assert num_samples == 4 and prompt_ids.shape[0] == 2
        rows = [tok(t, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if stop else [])
                for t, stop in texts]  # fmt: skip
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return Samples(prompt_ids.repeat_interleave(4, 0), prompt_mask.repeat_interleave(4, 0), ids, mask)

    monkeypatch.setattr(rest_em, "sample_groups", fake_sample_groups)
    loop = ReSTEM(problems="unused.jsonl", num_samples=4, max_solutions=1)
    trainer = SimpleNamespace(datamodule=data)
    module = SimpleNamespace(tokenizer=tok, model=None, device=torch.device("cpu"))
    produced = loop.e_step(trainer, module, 0, items)
    assert [p["correct"] for p in produced] == [2, 0]
    assert produced[0]["solutions"] == ["3+4=7. The answer is 7."] and produced[1]["solutions"] == []
    rows = loop.train_rows(trainer, module, 0, produced)
    assert rows == [{"prompt": "What is 3+4?", "response": "3+4=7. The answer is 7.", "answer": "7", "category": "add"}]
    assert loop.round_metrics(0, produced, rows) == {"pass_rate": 2 / 8, "solved": 0.5, "kept": 1.0}

    # keep_rejected: the same samples also give label-false rows, the non-empty ones the verifier rejects or the
    # token budget cut, capped per problem like the verified ones
    loop = ReSTEM(problems="unused.jsonl", num_samples=4, max_solutions=4, keep_rejected=True)
    produced = loop.e_step(trainer, module, 0, items)
    assert produced[0]["solutions"] == ["3+4=7. The answer is 7."] * 2
    assert sorted(produced[0]["rejected"]) == ["3+4=7. The answer is 7.", "3+4=8. The answer is 8."]
    assert sorted(produced[1]["rejected"]) == ["2+2=3.", "2+2=5. The answer is 5.", "The answer is 44"]
    rows = loop.train_rows(trainer, module, 0, produced)
    labelled = sorted((r["prompt"][8:11], r["completion"], r["label"]) for r in rows)
    assert labelled == [("2+2", "2+2=3.", False), ("2+2", "2+2=5. The answer is 5.", False),
                        ("2+2", "The answer is 44", False), ("3+4", "3+4=7. The answer is 7.", False),
                        ("3+4", "3+4=7. The answer is 7.", True), ("3+4", "3+4=7. The answer is 7.", True),
                        ("3+4", "3+4=8. The answer is 8.", False)]  # fmt: skip
    metrics = loop.round_metrics(0, produced, rows)
    assert metrics == {"pass_rate": 2 / 8, "solved": 0.5, "kept": 7.0, "kept_rejected": 5.0}
    capped = ReSTEM(problems="unused.jsonl", num_samples=4, max_solutions=1, keep_rejected=True)
    assert [len(p["rejected"]) for p in capped.e_step(trainer, module, 0, items)] == [1, 1]


@pytest.mark.parametrize("keep_rejected", [True, False])
def test_rest_em_refuses_a_datamodule_of_the_other_row_layout(keep_rejected):
    data = InstructionData() if keep_rejected else UnpairedPreferenceData()
    loop = ReSTEM(problems="unused.jsonl", keep_rejected=keep_rejected)
    with pytest.raises(ValueError, match="UnpairedPreferenceData" if keep_rejected else "keep_rejected: true"):
        loop.setup(SimpleNamespace(datamodule=data), None, "fit")


def test_top_k_1_sampling_at_temperature_1_is_greedy_decoding():
    backbone = micro_backbone()
    model, tok = backbone.load_model(), backbone.tokenizer
    ids, mask = pad_left([tok(p, add_special_tokens=False)["input_ids"] for p in ("Q: 3+4?\nA: ", "Q: 2 or 9?\nA:")],
                         tok.pad_token_id)  # fmt: skip
    kw = {"num_samples": 3, "max_new_tokens": 16, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    greedy = HFSampler()(model, ids, mask, temperature=0.0, **{**kw, "num_samples": 1}).completion_ids
    greedy = greedy.repeat_interleave(3, 0)  # transformers refuses several greedy sequences per prompt
    assert torch.equal(HFSampler()(model, ids, mask, temperature=1.0, top_k=1, **kw).completion_ids, greedy)
    for top_k in (None, 0):  # no top-k filter (not transformers' default of 50): samples of a random model differ
        torch.manual_seed(0)
        assert not torch.equal(HFSampler()(model, ids, mask, temperature=1.0, top_k=top_k, **kw).completion_ids, greedy)


def test_rest_em_samples_with_its_top_k(monkeypatch):
    """ReSTEM(top_k=1, temperature=1) draws exactly the greedy completions; its default top_k is the paper's 40."""
    backbone = micro_backbone()
    model, tok = backbone.load_model(), backbone.tokenizer
    data = InstructionData(max_length=64)
    data.tokenizer = tok
    drawn = []

    def spy(*args, **kwargs):
        drawn.append((kwargs["top_k"], rest_em.sample_groups.__wrapped__(*args, **kwargs)))
        return drawn[-1][1]

    spy.__wrapped__ = rest_em.sample_groups
    monkeypatch.setattr(rest_em, "sample_groups", spy)
    items = [{"prompt": "What is 3+4?", "answer": "7", "category": "add"},
             {"prompt": "Which is larger, 2 or 9?", "answer": "9", "category": "compare"}]  # fmt: skip
    module = SimpleNamespace(tokenizer=tok, model=model, device=torch.device("cpu"))
    trainer = SimpleNamespace(datamodule=data)
    ReSTEM(problems="unused.jsonl", num_samples=3, temperature=1.0, top_k=1, max_new_tokens=16).e_step(
        trainer, module, 0, items
    )
    assert ReSTEM(problems="unused.jsonl").top_k == 40
    ids, mask = pad_left([data.encode_prompt(it["prompt"]) for it in items], tok.pad_token_id)
    greedy = HFSampler()(model, ids, mask, num_samples=1, max_new_tokens=16, temperature=0.0,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    ((top_k, samples),) = drawn
    assert top_k == 1 and torch.equal(samples.completion_ids, greedy.completion_ids.repeat_interleave(3, 0))


def test_rest_em_config_runs_through_the_cli(tmp_path, solver_dir, one_thread):
    main(["fit", "--config", str(rest_em_config(tmp_path, solver_dir))])
    run = tmp_path / "runs/rest_em/version_0"
    history = json.loads((run / "rounds/rounds.json").read_text())
    assert [h["round"] for h in history] == [0, 1]
    for h in history:
        assert 0 < h["pass_rate"] <= 1 and h["kept"] >= 1 and "held_out/exact_match" in h
    for r in (0, 1):
        rows = [json.loads(line) for line in open(run / f"rounds/round_{r}/train.jsonl")]
        assert len(rows) == history[r]["kept"]
        assert all(is_equivalent(extract_answer(row["response"]), row["answer"]) for row in rows)
        problems = [json.loads(line) for f in sorted((run / f"rounds/round_{r}").glob("chunk_*")) for line in open(f)]
        assert len(problems) == 64 and all(len(p["solutions"]) <= 2 for p in problems)
    with open(run / "metrics.csv") as f:
        logged = [row for row in csv.DictReader(f) if row.get("round/pass_rate")]
    assert len(logged) == 2
    assert (run / "hf/config.json").is_file()


def test_rest_em_kto_config_trains_kto_on_verified_and_rejected_samples(tmp_path, solver_dir, one_thread):
    config = rest_em_config(tmp_path, solver_dir, name="rest_em_kto", config="configs/loops/rest_em_kto.yaml")
    main(["fit", "--config", str(config)])
    run = tmp_path / "runs/rest_em_kto/version_0"
    history = json.loads((run / "rounds/rounds.json").read_text())
    assert [h["round"] for h in history] == [0, 1]
    for r, h in enumerate(history):
        rows = [json.loads(line) for line in open(run / f"rounds/round_{r}/train.jsonl")]
        assert len(rows) == h["kept"] and sum(not row["label"] for row in rows) == h["kept_rejected"]
        assert 0 < h["kept_rejected"] <= h["kept"] and "held_out/exact_match" in h, history
        answers = {
            p["prompt"]: p["answer"]
            for f in (run / f"rounds/round_{r}").glob("chunk_*")
            for p in map(json.loads, open(f))
        }
        for row in rows:  # label true: verified; label false: rejected (or cut, whose answer may still be right)
            assert not row["label"] or is_equivalent(extract_answer(row["completion"]), answers[row["prompt"]])
    assert history[0]["kept_rejected"] < history[0]["kept"]  # the micro solver's round 0 verifies some samples
    with open(run / "metrics.csv") as f:
        logged = [row for row in csv.DictReader(f) if row.get("train/kl") or row.get("train/loss")]
    assert logged, "KTO logged no training step"


def test_a_lora_rounds_checkpoint_holds_the_adapter_not_the_base(tmp_path, solver_dir, one_thread):
    """The rounds' last.ckpt (written around each E-step, the resume point) leaves the frozen base out under LoRA."""
    import torch

    config = rest_em_config(tmp_path, solver_dir, rounds=2)
    main(["fit", "--config", str(config), "--model.init_args.backbone.lora={r: 4, dropout: 0.0}"])
    saved = torch.load(tmp_path / "runs/rest_em/version_0/rounds/last.ckpt", map_location="cpu", weights_only=False)
    weights = [k for k in saved["state_dict"] if k.startswith("model.")]
    assert weights and all("lora_" in k for k in weights), weights[:3]
    assert saved["ltune_frozen"]["keys"] and saved["ltune_frozen"]["base"]["name_or_path"] == str(solver_dir)


@pytest.mark.parametrize("bad", [{"num_samples": 0}, {"rounds": 0}])
def test_rest_em_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        ReSTEM(problems="p.jsonl", **bad)
