"""Preference pairs (ORPO, and any chosen-vs-rejected objective): one prompt, a chosen and a rejected response."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ltune.datamodules.base import LTuneData
from ltune.datamodules.batching import pad_right
from ltune.datamodules.chat import chat_messages
from ltune.datamodules.length import cut_pair
from ltune.datamodules.sources import DataError
from ltune.kernels import IGNORE_INDEX


class PreferenceData(LTuneData):
    """Preference pairs in TRL's layouts: a prompt, a chosen and a rejected response.

    * explicit prompt: ``{"prompt": str | messages, "chosen": str | [assistant message], "rejected": ...}``;
    * implicit prompt, conversations (UltraFeedback-binarized): ``chosen`` and ``rejected`` are whole conversations
      that share every turn but the last, the assistant's answer (a string ``prompt`` beside them is ignored);
    * implicit prompt, strings: ``chosen`` and ``rejected`` are whole texts; the prompt is their longest common
      prefix, cut back to the last whitespace so that no word is split (TRL's ``extract_prompt`` can cut mid-word).

    Message lists may use ShareGPT's ``from``/``value`` keys and ``human``/``gpt`` roles. A row whose chosen and
    rejected responses are equal, or whose response is empty, stops loading with an error naming the source, row and
    field. Both responses share the prompt's tokens: when a pair is longer than ``max_length`` the prompt loses the
    same tokens from the left for both (``truncate_prompt``; a pair whose longer response alone does not fit is
    skipped), or both responses lose their ends (``keep_start``); both are counted and logged.

    Batches stack the pair so that one forward scores both: ``input_ids``/``attention_mask``/``labels`` are
    ``[2B, T]`` with the B chosen sequences first and the B rejected ones after, right-padded to one length;
    ``labels`` is ``-100`` outside the responses. Constructor arguments are those of :class:`LTuneData`.
    """

    fields = {"chosen": (str, list), "rejected": (str, list)}
    optional = {"prompt": (str, list), "answer": str, "category": str}

    def check(self, row: dict) -> str | None:
        chosen, rejected = row["chosen"], row["rejected"]
        if isinstance(chosen, list) != isinstance(rejected, list):
            return "fields 'chosen' and 'rejected' must both be strings or both be messages lists"
        if isinstance(chosen, list):
            try:
                name = "prompt"
                prompt = chat_messages(row["prompt"]) if isinstance(row.get("prompt"), list) else []
                name = "chosen"
                chosen = chat_messages(chosen)
                name = "rejected"
                rejected = chat_messages(rejected)
            except ValueError as e:
                return f"field '{name}' {e}"
            for name, msgs in (("chosen", chosen), ("rejected", rejected)):
                if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
                    return f"field '{name}' must end with a non-empty assistant turn"
            if chosen[:-1] != rejected[:-1]:
                return "fields 'chosen' and 'rejected' must share every turn before the last (one prompt per pair)"
            if not any(m["role"] == "user" for m in prompt + chosen[:-1]):
                return "the pair has no user turn: give 'prompt' messages, or whole conversations in chosen/rejected"
            row.update(prompt=prompt + chosen[:-1], chosen=chosen[-1]["content"], rejected=rejected[-1]["content"])
        elif "prompt" not in row:
            cut = common_prefix(chosen, rejected)
            if not cut.strip():
                return "fields 'chosen' and 'rejected' share no prompt: give a 'prompt' column (explicit prompt)"
            row.update(prompt=cut, chosen=chosen[len(cut) :], rejected=rejected[len(cut) :])
        elif isinstance(row["prompt"], str) and not row["prompt"].strip():
            return f"field 'prompt' (column '{self.columns.get('prompt', 'prompt')}') is empty"
        if row["chosen"].strip() == row["rejected"].strip():
            return "fields 'chosen' and 'rejected' have the same response: a pair needs two different responses"
        return None

    def encode(self, row: dict) -> dict[str, Any]:
        if isinstance(row["chosen"], list) or "prompt" not in row:  # a row handed over unchecked (set_train_rows)
            if err := self.check(row):
                raise DataError(err)
        prompt = row["prompt"]
        ptext, ctext = self.render(prompt, row["chosen"])
        _, rtext = self.render(prompt, row["rejected"])
        p, (c, r) = self.split_tokens(prompt, ptext, [ctext, rtext])
        p, (c, r), cut = cut_pair(p, [c, r], self.max_length, self.overlong)
        self._truncated += cut
        return {
            "input_ids": (p + c, p + r),
            "labels": ([IGNORE_INDEX] * len(p) + c, [IGNORE_INDEX] * len(p) + r),
            "category": row.get("category", "all"),
        }

    def collate(self, examples: Sequence[dict]) -> dict[str, Any]:
        if "prompt_ids" in examples[0]:  # eval prompts
            return super().collate(examples)
        ids = [e["input_ids"][0] for e in examples] + [e["input_ids"][1] for e in examples]
        labels = [e["labels"][0] for e in examples] + [e["labels"][1] for e in examples]
        input_ids, attention_mask = pad_right(ids, self.tokenizer.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": pad_right(labels, IGNORE_INDEX)[0],
            "category": [e["category"] for e in examples],
        }


def common_prefix(a: str, b: str) -> str:
    """The longest common prefix of two texts, cut back to end at whitespace (so that no word is split)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n < min(len(a), len(b)) or len(a) != len(b):
        while n > 0 and not a[n - 1].isspace():
            n -= 1
    return a[:n]
