"""The length-realistic workload of the speed benchmarks (``benchmarks/workload.py``): seeded, long-tailed lengths
within bounds under SmolLM2's chat template, rows in TRL's layouts that ltune's DataModules read as they are."""

from __future__ import annotations

import json

import pytest

from benchmarks import workload

pytestmark = pytest.mark.real


def test_sft_rows_are_seeded_multi_turn_and_long_tailed(tmp_path, smollm2):
    info = workload.main(["sft", "--rows", "24", "--out", str(tmp_path / "a.jsonl"), "--median", "300"])
    again = workload.main(["sft", "--rows", "24", "--out", str(tmp_path / "b.jsonl"), "--median", "300"])
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text() and info["tokens"] == again[
        "tokens"
    ]
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    tok = smollm2.tokenizer
    lengths = sorted(workload.rendered_tokens(tok, r["messages"]) for r in rows)
    assert 40 <= lengths[0] and lengths[-1] <= 4096 and lengths[-1] > 3 * lengths[len(lengths) // 2]  # a long tail
    assert any(len(r["messages"]) > 2 for r in rows) and all(r["messages"][-1]["role"] == "assistant" for r in rows)
    assert info["quantiles"]["max"] == lengths[-1] and info["tokens"] == sum(lengths)

    from ltune.datamodules import InstructionData

    data = InstructionData(train=str(tmp_path / "a.jsonl"), max_length=4096, batch_size=4)
    data.tokenizer = tok
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4


def test_pairs_share_a_long_prompt_and_prompts_stay_in_range(tmp_path):
    pairs = workload.main(["pairs", "--rows", "16", "--out", str(tmp_path / "p.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all(r["chosen"] != r["rejected"] for r in rows) and 0.2 < pairs["prompt_share"] < 0.9
    prompts = workload.main(["prompts", "--rows", "16", "--out", str(tmp_path / "q.jsonl")])
    assert 100 <= prompts["quantiles"]["min"] and prompts["quantiles"]["max"] <= 1100  # the template adds ~30


def test_exact_rows_and_pairs_are_about_the_asked_length(tmp_path):
    """``--exact L``: the memory benchmark's rows, about L tokens. An SFT row budgets 30 tokens for the template and
    system prompt, and each of its 1-4 exchanges adds two role headers of about 5 tokens: up to ~40 over L."""
    for kind, over in (("sft", 48), ("pairs", 8)):
        info = workload.main([kind, "--rows", "2", "--exact", "1024", "--out", str(tmp_path / f"{kind}.jsonl")])
        q = info["quantiles"]
        assert 1024 - 16 <= q["min"] <= q["max"] <= 1024 + over, (kind, q)
