"""ltune's token ids and loss masks against TRL's own SFT and DPO data paths on identical rows (SmolLM2's tokenizer).

TRL's side runs ``SFTTrainer``'s dataset preparation with ``assistant_only_loss=True`` (conversations) or its default
``completion_only_loss`` (prompt-completion rows), under Qwen2.5's chat template, which TRL swaps for its training
template (``trl/chat_templates/qwen2_5_training.jinja``, the same text with ``{% generation %}`` markers). ltune renders
with the plain Qwen2.5 template, which has no markers, and finds the assistant turns by rendering. Token ids must be
equal; masks are equal except where a difference is named below. SmolLM2's own template, which TRL refuses for
``assistant_only_loss``, is checked against a hand-annotated row. String rows with ``template: raw``, ``text`` rows and
DPO's prompt/chosen/rejected ids are compared with TRL's on the same rows.
"""

from __future__ import annotations

from importlib.resources import files

import datasets
import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from ltune.datamodules import InstructionData, PreferenceData
from ltune.kernels import IGNORE_INDEX as IGNORE
from tests.conftest import trained_runs, write_jsonl

pytestmark = pytest.mark.real
trl = pytest.importorskip("trl")

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "What is 1+2?"}, {"role": "assistant", "content": "3"},
                  {"role": "user", "content": "And times 2?"}, {"role": "assistant", "content": "The answer is 6."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Reverse abc."},
                  {"role": "assistant", "content": "cba"}, {"role": "user", "content": "Sort dbca."},
                  {"role": "assistant", "content": "abcd"}, {"role": "user", "content": "Thanks!"},
                  {"role": "assistant", "content": "You're welcome."}]},
]  # fmt: skip
STRINGS = [  # the first prompt ends with a space that the completion's first token would take in a joint render
    {"prompt": "Q: What is 2+2?\nA: ", "completion": "2+2=4. The answer is 4."},
    {"prompt": "The capital of France is", "completion": " Paris."},
    {"prompt": "Translate to French: cat\n", "completion": "chat<|im_end|>"},  # EOS already there: not doubled
    {"prompt": "Translate to French: cat", "completion": "chat"},  # joint: " catch" + "at", not " cat" + "chat"
]
TEXTS = [{"text": "The sky is blue."}, {"text": "def add(a, b):\n    return a + b\n"}]
PAIRS = [
    {"prompt": "Q: 2+2?\nA: ", "chosen": "4", "rejected": "5"},  # explicit, strings
    {"chosen": "The sky is blue today.", "rejected": "The sky is green today."},  # implicit, strings
    {"prompt": [{"role": "user", "content": "Capital of France?"}],  # explicit, conversational
     "chosen": [{"role": "assistant", "content": "Paris"}], "rejected": [{"role": "assistant", "content": "Lyon"}]},
]  # fmt: skip
PROMPT_COMPLETION = [
    {"prompt": [{"role": "user", "content": "What is 12+30?"}],
     "completion": [{"role": "assistant", "content": "12+30=42. The answer is 42."}]},
    {"prompt": [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Capital of France?"}],
     "completion": [{"role": "assistant", "content": "Paris"}]},
]  # fmt: skip


@pytest.fixture(scope="module")
def qwen_tok(smollm2_dir):
    """SmolLM2's tokenizer (ChatML special tokens) with Qwen2.5's chat template, as TRL ships it."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    tok.chat_template = files("trl").joinpath("chat_templates/qwen2_5.jinja").read_text()
    return tok


def trl_rows(tok, rows: list[dict], tmp_path, **config) -> list[dict]:
    """TRL's prepared rows: ``input_ids`` and the labels its collator trains (-100 outside its masks)."""
    from trl import SFTConfig, SFTTrainer

    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_length=None, **config)
    trainer = SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=datasets.Dataset.from_list(rows))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    out = []
    for i in range(len(rows)):
        n = int(batch["attention_mask"][i].sum())
        out.append({"input_ids": batch["input_ids"][i, :n].tolist(), "labels": batch["labels"][i, :n].tolist()})
    return out


def trl_pairs(tok, rows: list[dict], tmp_path) -> list[dict]:
    """TRL's DPOTrainer preparation of each row: its ``prompt_ids``, ``chosen_ids`` and ``rejected_ids``."""
    import copy

    from trl import DPOConfig, DPOTrainer

    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_length=None)
    out = []
    for row in rows:  # one dataset per row: TRL reads a dataset as all conversational or all strings
        data = datasets.Dataset.from_list([row])
        ds = DPOTrainer(model, copy.deepcopy(model), args=args, processing_class=tok, train_dataset=data).train_dataset
        out.append({k: ds[0][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")})
    return out


def ltune_rows(tok, rows: list[dict], tmp_path, cls=InstructionData, **kwargs) -> list[dict]:
    """ltune's encoding of the same rows, read from a jsonl file as a user's would be."""
    data = cls(max_length=4096, **kwargs)
    data.tokenizer = tok
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    return [data.encode(r) for r in data.load_rows(path, data.fields, data.optional, data.check)]


def differences(tok, ours: dict, theirs: dict) -> list[str]:
    """Positions where the two label sequences differ, as the decoded token and who trains it."""
    assert ours["input_ids"] == theirs["input_ids"]
    out = []
    for t, a, b in zip(ours["input_ids"], ours["labels"], theirs["labels"]):
        if (a == IGNORE) != (b == IGNORE):
            out.append(f"{tok.decode([t])!r} trained by {'ltune' if a != IGNORE else 'TRL'}")
    return out


def test_every_assistant_turn_is_trained_as_trls_assistant_only_loss(qwen_tok, tmp_path):
    ours = ltune_rows(qwen_tok, CONVERSATIONS, tmp_path)
    theirs = trl_rows(qwen_tok, CONVERSATIONS, tmp_path, assistant_only_loss=True)
    for o, t, row in zip(ours, theirs, CONVERSATIONS):
        turns = sum(m["role"] == "assistant" for m in row["messages"])
        # TRL's training template puts the newline after "<|im_start|>assistant" and the one after "<|im_end|>"
        # inside {% generation %}: TRL trains both, ltune neither (the header's newline is the prompt's end; the
        # newline after the end-of-turn token is template glue the model never writes)
        assert sorted(differences(qwen_tok, o, t)) == sorted(["'\\n' trained by TRL"] * 2 * turns)


def test_prompt_completion_rows_train_the_completion_as_trl(qwen_tok, tmp_path):
    ours = ltune_rows(qwen_tok, PROMPT_COMPLETION, tmp_path)
    theirs = trl_rows(qwen_tok, PROMPT_COMPLETION, tmp_path)
    for o, t in zip(ours, theirs):
        # TRL's completion mask covers everything after the prompt's tokens: the reply, "<|im_end|>" and the newline
        # after it; ltune leaves that newline out
        assert differences(qwen_tok, o, t) == ["'\\n' trained by TRL"]


def test_last_assistant_and_all_choose_the_trained_tokens(qwen_tok, tmp_path):
    row = CONVERSATIONS[0]
    last = ltune_rows(qwen_tok, [row], tmp_path, loss_on="last_assistant")[0]
    assert qwen_tok.decode([t for t in last["labels"] if t != IGNORE]) == "The answer is 6.<|im_end|>"
    every = ltune_rows(qwen_tok, [row], tmp_path, loss_on="all")[0]
    assert every["labels"] == every["input_ids"] == trl_rows(qwen_tok, [row], tmp_path)[0]["labels"]


def test_raw_string_rows_tokenize_and_mask_as_trl(smollm2, tmp_path):
    """``template: raw``: TRL's standard prompt-completion path (no template, EOS appended once, the completion starting
    where the prompt's tokens and the joint render's part): ids and labels equal."""
    tok = smollm2.tokenizer
    ours = ltune_rows(tok, STRINGS, tmp_path, template="raw")
    theirs = trl_rows(tok, STRINGS, tmp_path)
    assert [o["input_ids"] for o in ours] == [t["input_ids"] for t in theirs]
    assert [o["labels"] for o in ours] == [t["labels"] for t in theirs]
    assert tok.decode([t for t in ours[2]["labels"] if t != IGNORE]) == "chat<|im_end|>"
    # where the joint render merges across the boundary, the completion starts at the merged token (as TRL's does)
    assert tok.decode([t for t in ours[3]["labels"] if t != IGNORE]) == " catchat<|im_end|>"


def test_text_rows_train_every_token_as_trl(smollm2, tmp_path):
    ours = ltune_rows(smollm2.tokenizer, TEXTS, tmp_path)
    assert ours == trl_rows(smollm2.tokenizer, TEXTS, tmp_path)


def test_preference_rows_tokenize_as_trls_dpo(smollm2, tmp_path):
    """String pairs (``template: raw``; the implicit prompt cut where TRL cuts it) give TRL's ids exactly; the
    conversational pair gives TRL's ids but for the newline after each response's ``<|im_end|>``, which TRL keeps in
    the response and ltune leaves out (template glue the model never writes)."""
    tok = smollm2.tokenizer
    theirs = trl_pairs(tok, PAIRS, tmp_path)
    for i, row in enumerate(PAIRS):
        enc = ltune_rows(tok, [row], tmp_path, cls=PreferenceData, template="raw")[0]
        (chosen, rejected), (lc, lr) = enc["input_ids"], enc["labels"]
        n = lc.count(IGNORE)
        ours = {"prompt_ids": chosen[:n], "chosen_ids": chosen[n:], "rejected_ids": rejected[n:]}
        assert rejected[:n] == chosen[:n] and lr.count(IGNORE) == n
        if i < 2:
            assert ours == theirs[i]
        else:
            newline = tok("\n", add_special_tokens=False)["input_ids"]
            assert ours["prompt_ids"] == theirs[i]["prompt_ids"]
            assert [ours[k] + newline for k in ("chosen_ids", "rejected_ids")] == [
                theirs[i][k] for k in ("chosen_ids", "rejected_ids")
            ]


def test_smollm2_template_multi_turn_against_a_hand_annotated_row(smollm2, tmp_path):
    """SmolLM2's template has no generation markers and TRL has no training template for it."""
    enc = ltune_rows(smollm2.tokenizer, CONVERSATIONS[:1], tmp_path)[0]
    tok = smollm2.tokenizer
    assert trained_runs(tok, enc) == ["3<|im_end|>", "The answer is 6.<|im_end|>"]
    assert tok.decode(enc["input_ids"]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+2?<|im_end|>\n<|im_start|>assistant\n3<|im_end|>\n"
        "<|im_start|>user\nAnd times 2?<|im_end|>\n<|im_start|>assistant\nThe answer is 6.<|im_end|>\n"
    )
