"""JudgmentData: Align-P / Align-N / Misalign sequences, identical response tokens, batches, bad rows named."""

import pytest

from ltune.datamodules import DataError, EmbeddedTasks, JudgmentData
from tests.conftest import write_jsonl


def _setup(dm, tokenizer):
    dm.tokenizer = tokenizer
    dm.setup("fit")
    return dm


def test_contexts_and_identical_response_tokens(tokenizer):
    rows = EmbeddedTasks(format="judgment", n=8).rows()
    dm = _setup(JudgmentData(train=EmbeddedTasks(format="judgment", n=8)), tokenizer)
    for row, ex in zip(rows, dm.data["train"]):
        seqs = ex["sequences"]
        assert len(seqs) == (2 if row["label"] == "negative" else 1)
        plain = seqs[-1]
        prompt = plain["input_ids"][: plain["labels"].count(-100)]
        assert tokenizer.decode(prompt) == f"Q: {row['instruction']}\nA: "
        if row["label"] == "negative":
            judged = seqs[0]
            assert row["judgment"] in tokenizer.decode(judged["input_ids"])
            assert row["judgment"] not in tokenizer.decode(plain["input_ids"])
            assert [t for t in judged["labels"] if t != -100] == [t for t in plain["labels"] if t != -100]
        assert tokenizer.decode([t for t in plain["labels"] if t != -100]) == row["response"] + tokenizer.eos_token


def test_batch_puts_misalign_sequences_after_the_first_block(tokenizer):
    dm = _setup(JudgmentData(train=EmbeddedTasks(format="judgment", n=8)), tokenizer)
    examples = dm.data["train"][:6]
    batch = dm.collate(examples)
    neg = [i for i, e in enumerate(examples) if len(e["sequences"]) == 2]
    assert batch["negative_rows"] == neg and batch["input_ids"].shape[0] == 6 + len(neg)
    for k, i in enumerate(neg):
        misalign = [t for t in batch["labels"][6 + k].tolist() if t != -100]
        align_n = [t for t in batch["labels"][i].tolist() if t != -100]
        assert misalign == align_n


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"instruction": "x", "response": "y", "label": "bad"}, "row 2: field 'label' (column 'label') is 'bad'"),
        (
            {"instruction": "x", "response": "y", "label": "negative"},
            "row 2: field 'judgment' (column 'judgment') is missing",
        ),
        (
            {"instruction": "x", "response": "", "label": "positive"},
            "row 2: field 'response' (column 'response') is empty",
        ),
    ],
)
def test_bad_rows_name_the_file_row_and_field(tmp_path, tokenizer, row, message):
    good = {"instruction": "x", "response": "y", "label": "positive", "judgment": "fine"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(DataError) as err:
        _setup(JudgmentData(train=path), tokenizer)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
