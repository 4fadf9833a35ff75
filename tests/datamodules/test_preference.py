"""PreferenceData: string and chat rows, shared prompt tokens, stacked batches, bad rows named, length policy."""

import pytest

from ltune.datamodules import DataError, EmbeddedTasks, PreferenceData
from tests.conftest import write_jsonl


def _setup(dm, tokenizer):
    dm.tokenizer = tokenizer
    dm.setup("fit")
    return dm


def test_rows_share_the_prompt_and_batches_stack_chosen_then_rejected(tokenizer):
    rows = EmbeddedTasks(format="preference", n=6).rows()
    dm = _setup(PreferenceData(train=EmbeddedTasks(format="preference", n=6), batch_size=3), tokenizer)
    ex = dm.data["train"][0]
    (c_ids, r_ids), (c_lab, r_lab) = ex["input_ids"], ex["labels"]
    n_prompt = c_lab.index(next(t for t in c_lab if t != -100))
    assert c_ids[:n_prompt] == r_ids[:n_prompt] and r_lab[:n_prompt] == [-100] * n_prompt
    assert tokenizer.decode(c_ids[:n_prompt]) == f"Q: {rows[0]['prompt']}\nA: "
    assert tokenizer.decode(c_ids[n_prompt:]) == rows[0]["chosen"] + tokenizer.eos_token
    assert tokenizer.decode([t for t in r_lab if t != -100]) == rows[0]["rejected"] + tokenizer.eos_token
    batch = dm.collate(dm.data["train"][:3])
    assert batch["input_ids"].shape[0] == 6 and batch["labels"].shape == batch["input_ids"].shape
    for i in range(3):
        chosen = [t for t in batch["labels"][i].tolist() if t != -100]
        rejected = [t for t in batch["labels"][3 + i].tolist() if t != -100]
        assert chosen == [t for t in dm.data["train"][i]["labels"][0] if t != -100]
        assert rejected == [t for t in dm.data["train"][i]["labels"][1] if t != -100]
    assert batch["attention_mask"].sum(1).tolist() == [
        len(dm.data["train"][i % 3]["input_ids"][i // 3]) for i in range(6)
    ]


def test_chat_rows_like_ultrafeedback_binarized(tmp_path, tokenizer):
    user = {"role": "user", "content": "What is 2+2?"}
    row = {
        "prompt": "What is 2+2?",
        "chosen": [user, {"role": "assistant", "content": "4"}],
        "rejected": [user, {"role": "assistant", "content": "5"}],
        "messages": [user, {"role": "assistant", "content": "4"}],
        "score_chosen": 9.0,
    }
    dm = _setup(PreferenceData(train=write_jsonl(tmp_path / "uf.jsonl", [row])), tokenizer)
    (c_ids, r_ids), _ = dm.data["train"][0]["input_ids"], None
    assert tokenizer.decode(c_ids) == "Q: What is 2+2?\nA: 4" + tokenizer.eos_token
    assert tokenizer.decode(r_ids) == "Q: What is 2+2?\nA: 5" + tokenizer.eos_token


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "row 2: fields 'chosen' and 'rejected' have the same"),
        ({"prompt": "p", "chosen": "a", "rejected": "  "}, "row 2: field 'rejected' (column 'rejected') is empty"),
        ({"prompt": "p", "chosen": "a"}, "row 2: field 'rejected' (column 'rejected') is missing"),
        ({"chosen": "a", "rejected": "b"}, "row 2: fields 'chosen' and 'rejected' share no prompt"),
        (
            {"chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}], "rejected": []},
            "row 2: field 'rejected' is not a non-empty list of messages",
        ),
        (
            {
                "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}],
                "rejected": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "b"}],
            },
            "row 2: field 'chosen' must end with a non-empty assistant turn",
        ),
        (
            {
                "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "b"}],
            },
            "row 2: fields 'chosen' and 'rejected' must share every turn before the last",
        ),
    ],
)
def test_bad_rows_name_the_file_row_and_field(tmp_path, tokenizer, row, message):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    if isinstance(row["chosen"], list):  # a jsonl column keeps one type: make row 1 a chat row too
        good = {
            k: [{"role": "user", "content": "p"}, {"role": "assistant", "content": v}]
            for k, v in good.items()
            if k != "prompt"
        }
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(DataError) as err:
        _setup(PreferenceData(train=path), tokenizer)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_length_policy_truncates_the_shared_prompt_or_skips(tmp_path, tokenizer):
    rows = [
        {"prompt": "x" * 50, "chosen": "short", "rejected": "a longer response"},  # prompt truncated
        {"prompt": "p", "chosen": "y" * 40, "rejected": "n"},  # the longer response alone does not fit: skipped
        {"prompt": "p", "chosen": "a", "rejected": "b"},
    ]
    dm = _setup(PreferenceData(train=write_jsonl(tmp_path / "l.jsonl", rows), max_length=32), tokenizer)
    assert dm.stats["train"] == {"rows": 3, "kept": 2, "skipped": 1, "truncated": 1}
    (c_ids, r_ids), (c_lab, r_lab) = dm.data["train"][0]["input_ids"], dm.data["train"][0]["labels"]
    assert max(len(c_ids), len(r_ids)) == 32
    n_prompt = sum(t == -100 for t in c_lab)
    assert n_prompt == sum(t == -100 for t in r_lab) and c_ids[:n_prompt] == r_ids[:n_prompt]
    skip = _setup(
        PreferenceData(train=write_jsonl(tmp_path / "l.jsonl", rows), max_length=32, overlong="skip"), tokenizer
    )
    assert skip.stats["train"]["kept"] == 1
    start = _setup(
        PreferenceData(train=write_jsonl(tmp_path / "l.jsonl", rows), max_length=32, overlong="keep_start"), tokenizer
    )  # prompts stay whole: row 1's fills max_length alone (skipped); row 2's responses lose their ends
    assert start.stats["train"] == {"rows": 3, "kept": 2, "skipped": 1, "truncated": 1}
    (c_ids, r_ids), (c_lab, r_lab) = start.data["train"][0]["input_ids"], start.data["train"][0]["labels"]
    assert len(c_ids) == 32 and tokenizer.decode([t for t in c_lab if t != -100]) == "y" * (32 - c_lab.count(-100))
    assert tokenizer.decode([t for t in r_lab if t != -100]) == "n</s>"  # the short response is whole
