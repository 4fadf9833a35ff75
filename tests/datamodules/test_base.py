"""Loading, validation errors naming source/row/field, rendering, exact completion masks, length policy, samplers."""

import json

import pandas as pd
import pytest

from ltune.datamodules import CritiqueData, DataError, EmbeddedTasks, InstructionData, PromptData
from ltune.datamodules.batching import ResumableSampler, Shard
from tests.conftest import trained_runs, write_jsonl

ROWS = [{"instruction": "What is 2+2?", "output": "2+2=4. The answer is 4."}, {"instruction": "Hi", "output": "Hello"}]


def _setup(dm, tokenizer):
    dm.tokenizer = tokenizer
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("ext", ["jsonl", "json", "parquet", "csv"])
def test_loads_every_file_format_with_column_mapping(tmp_path, tokenizer, ext):
    path = tmp_path / f"d.{ext}"
    if ext == "jsonl":
        write_jsonl(path, ROWS)
    elif ext == "json":
        path.write_text(json.dumps(ROWS))
    else:
        getattr(pd.DataFrame(ROWS), f"to_{ext}")(path, **({"index": False} if ext == "csv" else {}))
    dm = _setup(InstructionData(train=str(path), columns={"prompt": "instruction", "response": "output"}), tokenizer)
    assert len(dm.data["train"]) == 2


def test_completion_mask_is_exact(tokenizer):
    dm = _setup(InstructionData(train=EmbeddedTasks(n=5)), tokenizer)
    rows = EmbeddedTasks(n=5).rows()
    for row, ex in zip(rows, dm.data["train"]):
        completion = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
        prompt = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == -100]
        assert tokenizer.decode(completion) == row["response"] + tokenizer.eos_token
        assert tokenizer.decode(prompt) == f"Q: {row['prompt']}\nA: "
        assert ex["labels"][len(prompt) :] == ex["input_ids"][len(prompt) :]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"instruction": "x"}, "row 2: field 'response' (column 'output') is missing"),
        ({"instruction": "x", "output": "   "}, "row 2: field 'response' (column 'output') is missing or empty"),
        ({"instruction": "x", "output": 3}, "row 2: field "),
        ({"instruction": ["x"], "output": "y"}, "row 2: field "),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, tokenizer, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], row, ROWS[1]])
    dm = InstructionData(train=path, columns={"prompt": "instruction", "response": "output"})
    with pytest.raises(DataError) as err:
        _setup(dm, tokenizer)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_wrong_type_in_a_consistent_column_is_named(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}])
    dm = InstructionData(train=path, columns={"response": "prompt", "prompt": "response"})
    _setup(dm, tokenizer)  # fine: strings both ways
    path = write_jsonl(tmp_path / "n.jsonl", [{"question": "q", "solution": "s", "critique": 1}] * 2)
    with pytest.raises(DataError, match=r"n.jsonl: row 1: field 'critique' \(column 'critique'\) is int, expected str"):
        _setup(CritiqueData(train=path), tokenizer)


def test_malformed_json_line_is_named(tmp_path, tokenizer):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match="m.jsonl: row 2: not valid JSON"):
        _setup(InstructionData(train=str(path)), tokenizer)


def test_messages_train_every_assistant_turn_by_default_or_the_last_or_all(tmp_path, tokenizer):
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "dd"},
    ]
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": msgs}])

    def trained(**kwargs) -> list[str]:
        ex = _setup(InstructionData(train=path, **kwargs), tokenizer).data["train"][0]
        # the sequence is the whole render, the template's newline after the last turn included
        assert tokenizer.decode(ex["input_ids"]) == "Q: a\nA: b</s>\nQ: c\nA: dd</s>\n"
        return trained_runs(tokenizer, ex)

    assert trained() == ["b</s>", "dd</s>"]  # every assistant reply and its end-of-turn token, no template glue
    assert trained(loss_on="last_assistant") == ["dd</s>"]
    assert trained(loss_on="all") == ["Q: a\nA: b</s>\nQ: c\nA: dd</s>\n"]
    bad = [{"messages": msgs[:1] + [{"role": "assistant", "content": " "}]}]
    with pytest.raises(DataError, match="row 1: field 'messages' has no non-empty assistant turn"):
        _setup(InstructionData(train=write_jsonl(tmp_path / "b.jsonl", bad)), tokenizer)


def test_length_policy_truncates_prompt_from_left_or_skips_and_counts(tmp_path, tokenizer):
    rows = [
        {"prompt": "p" * 40, "response": "r" * 5},
        {"prompt": "q", "response": "s" * 60},
        {"prompt": "x", "response": "y"},
    ]
    path = write_jsonl(tmp_path / "l.jsonl", rows)
    dm = _setup(InstructionData(train=path, max_length=30), tokenizer)
    assert dm.stats["train"] == {"rows": 3, "kept": 2, "skipped": 1, "truncated": 1}
    ex = dm.data["train"][0]
    assert len(ex["input_ids"]) == 30 and tokenizer.decode(ex["input_ids"]).endswith("p\nA: rrrrr</s>")
    dm = _setup(InstructionData(train=path, max_length=30, overlong="skip"), tokenizer)
    assert dm.stats["train"] == {"rows": 3, "kept": 1, "skipped": 2, "truncated": 0}


def test_critique_and_prompt_formats(tokenizer):
    dm = _setup(CritiqueData(train=EmbeddedTasks(format="critique", n=4)), tokenizer)
    text = tokenizer.decode(dm.data["train"][0]["input_ids"])
    assert "Please critique whether" in text and "\n\nSolution:\n" in text and "Conclusion:" in text
    dm = _setup(PromptData(train=EmbeddedTasks(format="prompts", n=3)), tokenizer)
    batch = dm.collate(dm.data["train"])
    assert batch["prompt_ids"].shape[0] == 3 and batch["prompt_mask"][:, -1].all()  # left padded
    assert all(isinstance(a, str) for a in batch["answer"])


def test_collate_pads_right_with_ignored_labels(tokenizer):
    dm = _setup(InstructionData(train=EmbeddedTasks(n=4)), tokenizer)
    b = dm.collate(dm.data["train"])
    lengths = b["attention_mask"].sum(1)
    for i, ex in enumerate(dm.data["train"]):
        assert lengths[i] == len(ex["input_ids"])
        assert (b["labels"][i, lengths[i] :] == -100).all() and (b["input_ids"][i, lengths[i] :] == 0).all()


def test_resumable_sampler_skips_trained_batches_and_shards_cover_once():
    data = list(range(23))
    full = list(ResumableSampler(data, 1, 0, seed=3, batch_size=4))
    s = ResumableSampler(data, 1, 0, seed=3, batch_size=4)
    s.resume = (0, 2)
    assert list(s) == full[8:]
    assert list(s) == full  # the skip applies once
    s.set_epoch(1)
    assert sorted(s) == data and list(s) != full
    shards = [list(Shard(data, 3, r)) for r in range(3)]
    assert sorted(sum(shards, [])) == data


def test_the_backbones_system_prompt_is_the_default_and_the_datas_wins():
    """A per-model prompt style (Backbone.system_prompt) reaches every prompt the data renders, unless the data names
    its own system message."""
    import lightning as L

    from ltune import SFT
    from tests.conftest import micro_backbone

    model = SFT(backbone=micro_backbone(system_prompt="End with the answer."))
    for system, expected in ((None, "End with the answer."), ("Be brief.", "Be brief.")):
        dm = InstructionData(train=EmbeddedTasks(n=4), eval_prompts=EmbeddedTasks(format="prompts", n=2), system=system)
        L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0).fit(model, dm)  # fmt: skip
        for ex in (dm.data["train"][0], dm.data["eval"][0]):
            ids = ex["input_ids"] if "input_ids" in ex else ex["prompt_ids"]
            assert model.tokenizer.decode(ids).startswith(f"{expected}\nQ: ")


@pytest.mark.parametrize("ext", ["jsonl", "json"])
def test_a_utf8_byte_order_mark_is_accepted_and_other_encodings_name_the_row(tmp_path, tokenizer, ext):
    text = "\n".join(json.dumps(r) for r in ROWS) if ext == "jsonl" else json.dumps(ROWS)
    bom = tmp_path / f"bom.{ext}"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    dm = _setup(InstructionData(train=str(bom), columns={"prompt": "instruction", "response": "output"}), tokenizer)
    assert len(dm.data["train"]) == 2
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl: row 2: not UTF-8"):
        _setup(InstructionData(train=str(latin), columns={"prompt": "instruction", "response": "output"}), tokenizer)
