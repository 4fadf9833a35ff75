"""Every layout of TRL's dataset-formats guide, as a user's jsonl: what each row trains, the length policy on
conversations, and short runs through ``ltune fit`` (the tiny preset)."""

from __future__ import annotations

import pytest

from ltune.cli import main
from ltune.datamodules import InstructionData, PreferenceData, PromptData, UnpairedPreferenceData
from ltune.datamodules.sources import DataError
from ltune.kernels import IGNORE_INDEX as IGNORE
from tests.conftest import MICRO, ROOT, read_metrics, trained_runs, write_jsonl

U, A = "user", "assistant"
SFT_LAYOUTS = {
    "language modelling": ({"text": "The sky is blue."}, ["The sky is blue.</s>"]),
    "conversational": (
        {"messages": [{"role": U, "content": "1+2?"}, {"role": A, "content": "3"}, {"role": U, "content": "x2?"},
                      {"role": A, "content": "6"}]},
        ["3</s>", "6</s>"],
    ),
    "sharegpt": (
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                           {"from": "gpt", "value": "Hello"}]},
        ["Hello</s>"],
    ),
    "prompt-completion": ({"prompt": "2+2?", "completion": "4"}, ["4</s>"]),
    "prompt-completion, conversational": (
        {"prompt": [{"role": U, "content": "2+2?"}], "completion": [{"role": A, "content": "4"}]},
        ["4</s>"],
    ),
    "prompt-response (ltune's older name)": ({"prompt": "2+2?", "response": "4"}, ["4</s>"]),
}  # fmt: skip


def setup(dm, tokenizer):
    dm.tokenizer = tokenizer
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("layout", list(SFT_LAYOUTS))
def test_each_sft_layout_trains_what_trl_trains(layout, tmp_path, tokenizer):
    row, expected = SFT_LAYOUTS[layout]
    dm = setup(InstructionData(train=write_jsonl(tmp_path / "d.jsonl", [row])), tokenizer)
    assert trained_runs(tokenizer, dm.data["train"][0]) == expected


def test_sharegpt_system_and_roles_reach_the_template(tmp_path, tokenizer):
    row, _ = SFT_LAYOUTS["sharegpt"]
    ex = setup(InstructionData(train=write_jsonl(tmp_path / "d.jsonl", [row])), tokenizer).data["train"][0]
    assert tokenizer.decode(ex["input_ids"]) == "Be brief.\nQ: Hi\nA: Hello</s>\n"
    other = {"conversations": [{"speaker": "client", "text": "Hi"}, {"speaker": "bot", "text": "Yo"}]}
    keys, roles = {"role": "speaker", "content": "text"}, {"client": U, "bot": A}
    dm = InstructionData(train=write_jsonl(tmp_path / "o.jsonl", [other]), message_keys=keys, roles=roles)
    assert trained_runs(tokenizer, setup(dm, tokenizer).data["train"][0]) == ["Yo</s>"]


def test_a_row_that_is_no_layout_names_the_field(tmp_path, tokenizer):
    for row, message in [
        ({"messages": [{"role": U, "content": "hi"}]}, "row 1: field 'messages' has no non-empty assistant turn"),
        ({"messages": [{"role": U}]}, "row 1: field 'messages' item 0 is not a {role, content} message"),
        ({"prompt": [{"role": U, "content": "q"}], "completion": [{"role": U, "content": "a"}]},
         "row 1: field 'completion' (column 'completion') has no assistant turn"),
        ({"prompt": "q"}, "row 1: field 'completion' (column 'completion') is missing or empty"),
    ]:  # fmt: skip
        with pytest.raises(DataError, match=message.replace("{", r"\{").replace("(", r"\(").replace(")", r"\)")):
            setup(InstructionData(train=write_jsonl(tmp_path / "b.jsonl", [row])), tokenizer)


def test_over_long_conversations_keep_the_system_message_or_the_start_and_are_counted(tmp_path, tokenizer):
    row = {"messages": [{"role": "system", "content": "SYS"}, {"role": U, "content": "u" * 40},
                        {"role": A, "content": "a" * 10}]}  # fmt: skip
    path = write_jsonl(
        tmp_path / "l.jsonl", [row, {"messages": [{"role": U, "content": "q"}, {"role": A, "content": "r"}]}]
    )
    end = setup(InstructionData(train=path, max_length=30), tokenizer)
    ex = end.data["train"][0]
    assert len(ex["input_ids"]) == 30 and tokenizer.decode(ex["input_ids"]).startswith("SYS\n")
    assert trained_runs(tokenizer, ex) == ["a" * 10 + "</s>"] and end.stats["train"]["truncated"] == 1
    start = setup(InstructionData(train=path, max_length=30, overlong="keep_start"), tokenizer)
    assert start.stats["train"] == {"rows": 2, "kept": 1, "skipped": 1, "truncated": 0}  # its reply was cut off


PREFERENCE_LAYOUTS = {
    "explicit, strings": {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."},
    "explicit, conversational": {"prompt": [{"role": U, "content": "Sky?"}],
                                 "chosen": [{"role": A, "content": "Blue."}],
                                 "rejected": [{"role": A, "content": "Green."}]},
    "implicit, conversational": {"chosen": [{"role": U, "content": "Sky?"}, {"role": A, "content": "Blue."}],
                                 "rejected": [{"role": U, "content": "Sky?"}, {"role": A, "content": "Green."}]},
    "implicit, strings": {"chosen": "Sky? Blue.", "rejected": "Sky? Green."},
}  # fmt: skip


@pytest.mark.parametrize("layout", list(PREFERENCE_LAYOUTS))
def test_each_preference_layout_reads_one_prompt_and_two_responses(layout, tmp_path, tokenizer):
    dm = setup(PreferenceData(train=write_jsonl(tmp_path / "p.jsonl", [PREFERENCE_LAYOUTS[layout]])), tokenizer)
    ex = dm.data["train"][0]
    chosen = {"input_ids": ex["input_ids"][0], "labels": ex["labels"][0]}
    rejected = {"input_ids": ex["input_ids"][1], "labels": ex["labels"][1]}
    assert trained_runs(tokenizer, chosen) == ["Blue.</s>"] and trained_runs(tokenizer, rejected) == ["Green.</s>"]
    prompt = "Q: Sky? \nA: " if layout == "implicit, strings" else "Q: Sky?\nA: "  # the common prefix ends at a space
    assert tokenizer.decode([t for t, lab in zip(chosen["input_ids"], chosen["labels"]) if lab == IGNORE]) == prompt


def _fit(config: str, train: str, tmp_path, *extra: str) -> list[dict]:
    main(["fit", "--config", str(ROOT / config), *extra, *MICRO, f"--data.init_args.train={train}",
          "--data.init_args.val=null", "--data.init_args.eval_prompts=null", "--validate_around_fit=false",
          "--trainer.max_steps=2", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
          f"--trainer.default_root_dir={tmp_path}", "--data.init_args.batch_size=2"])  # fmt: skip
    (run,) = (tmp_path / "runs").glob("*/version_0")
    return [r for r in read_metrics(run) if r.get("train/loss")]


# every layout through `ltune fit` (and, in tests/real/test_smollm2.py, on the real model): config, rows, flags
CLI_LAYOUTS = {
    **{f"sft: {k}": ("configs/objectives/sft.yaml", row, []) for k, (row, _) in SFT_LAYOUTS.items()},
    "sft: prompt-completion, raw": ("configs/objectives/sft.yaml", SFT_LAYOUTS["prompt-completion"][0],
                                    ["--data.init_args.template=raw"]),
    **{f"dpo: {k}": ("configs/objectives/dpo.yaml", row, []) for k, row in PREFERENCE_LAYOUTS.items()},
    "ttrl: prompt-only, string": ("configs/objectives/ttrl.yaml", {"prompt": "What is 2+3?", "answer": "5"}, []),
    "ttrl: prompt-only, conversational": ("configs/objectives/ttrl.yaml",
                                          {"prompt": [{"role": U, "content": "What is 2+3?"}], "answer": "5"}, []),
}  # fmt: skip
GROUP = ["--model.init_args.num_votes=2", "--model.init_args.num_generations=2",
         "--model.init_args.max_completion_length=4"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(CLI_LAYOUTS))
def test_each_layout_trains_through_the_cli(layout, tmp_path):
    config, row, flags = CLI_LAYOUTS[layout]
    train = write_jsonl(tmp_path / "train.jsonl", [row] * 4)
    prompts = ["--config", str(ROOT / "configs/data/prompts_jsonl.yaml"), *GROUP] if "ttrl" in config else []
    assert len(_fit(config, train, tmp_path, *flags, *prompts)) == 2


def test_unpaired_preference_rows_load_and_tokenize_with_their_label(tmp_path, tokenizer):
    sky = [{"role": U, "content": "Sky?"}]
    rows = [{"prompt": sky, "completion": [{"role": A, "content": "Blue."}], "label": True},
            {"prompt": sky, "completion": [{"role": A, "content": "Green."}], "label": False}]  # fmt: skip
    dm = setup(UnpairedPreferenceData(train=write_jsonl(tmp_path / "u.jsonl", rows)), tokenizer)
    assert [trained_runs(tokenizer, ex) for ex in dm.data["train"]] == [["Blue.</s>"], ["Green.</s>"]]
    batch = dm.collate(dm.data["train"])
    assert batch["label"].tolist() == [True, False] and batch["input_ids"].shape[0] == 2
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Sky?", "completion": "Blue.", "label": "yes"}])
    with pytest.raises(DataError, match=r"row 1: field 'label' \(column 'label'\) is str, expected bool"):
        setup(UnpairedPreferenceData(train=bad), tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "fragment"),
    [("sft", "chat_jsonl"), ("dpo", "preference_jsonl"), ("ttrl", "prompts_jsonl")],
)
def test_the_shipped_user_data_fragments_train(method, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the fragments name examples/data/*.jsonl relative to the checkout, as README runs them
    main(["fit", "--config", f"configs/objectives/{method}.yaml", "--config", f"configs/data/{fragment}.yaml", *MICRO,
          "--validate_around_fit=false", "--trainer.max_steps=2", "--trainer.log_every_n_steps=1",
          "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    (run,) = (tmp_path / "runs").glob("*/version_0")
    assert len([r for r in read_metrics(run) if r.get("train/loss")]) == 2


def test_a_template_that_rewrites_earlier_turns_stops_naming_the_row(tmp_path, tokenizer):
    # like templates that drop past reasoning: an earlier assistant turn renders differently once a later one follows
    rewriting = (
        "{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n"
        "{% elif loop.last %}A: {{ m['content'] }}{{ eos_token }}\n{% else %}A: [...]{{ eos_token }}\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}A: {% endif %}"
    )
    tokenizer.chat_template = rewriting
    row, _ = SFT_LAYOUTS["conversational"]
    path = write_jsonl(tmp_path / "r.jsonl", [row])
    with pytest.raises(DataError, match=r"r\.jsonl: row 1: the chat template does not render turn 1 \(assistant\)"):
        setup(InstructionData(train=path), tokenizer)


def test_prompt_only_rows_keep_their_other_columns_for_reward_functions(tmp_path, tokenizer):
    """TRL's prompt-only layout, string or messages (a file holds one kind, as a dataset column has one type); the
    row's other columns reach the batch by name, as TRL hands them to reward functions (a mapped column is the
    field, not an extra)."""
    strings = [{"question": "2+2?", "answer": "4", "difficulty": 1, "tags": ["add"]}]
    messages = [{"question": [{"role": U, "content": "3+3?"}], "answer": "6", "difficulty": 2, "tags": []}]
    batches = []
    for name, rows in (("s", strings), ("m", messages)):
        dm = setup(
            PromptData(train=write_jsonl(tmp_path / f"{name}.jsonl", rows), columns={"prompt": "question"}), tokenizer
        )
        batches.append(dm.collate(dm.data["train"]))
    assert [b["columns"] for b in batches] == [[{"difficulty": 1, "tags": ["add"]}], [{"difficulty": 2, "tags": []}]]
    assert [b["answer"] for b in batches] == [["4"], ["6"]]
    for b, q in zip(batches, ("2+2?", "3+3?")):
        text = tokenizer.apply_chat_template([{"role": U, "content": q}], tokenize=False, add_generation_prompt=True)
        assert tokenizer.decode(b["prompt_ids"][0][b["prompt_mask"][0].bool()]) == text
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": [{"text": "3+3?"}]}])
    with pytest.raises(DataError, match=r"b\.jsonl: row 1: field 'prompt' item 0 is not a \{role, content\} message"):
        setup(PromptData(train=bad), tokenizer)


def test_raw_string_rows_join_prompt_and_completion_as_trl_and_messages_keep_the_template(tmp_path, tokenizer):
    string = {"prompt": "Q: 2+2? A:", "completion": " 4"}
    chat = {"prompt": [{"role": U, "content": "2+2?"}], "completion": [{"role": A, "content": "4"}]}
    encoded = []
    for name, row in (("s", string), ("c", chat)):
        dm = setup(InstructionData(train=write_jsonl(tmp_path / f"{name}.jsonl", [row]), template="raw"), tokenizer)
        encoded += dm.data["train"]
    raw, templated = encoded
    assert raw["input_ids"] == tokenizer("Q: 2+2? A: 4</s>")["input_ids"]
    assert trained_runs(tokenizer, raw) == [" 4</s>"] and trained_runs(tokenizer, templated) == ["4</s>"]
    prompt = tokenizer.apply_chat_template(chat["prompt"], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(templated["input_ids"]).startswith(prompt)
