"""Preference pairs (ORPO, and any chosen-vs-rejected objective): one prompt, a chosen and a rejected response."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ltune.datamodules.base import LTuneData, Overlong
from ltune.datamodules.batching import pad_right
from ltune.kernels import IGNORE_INDEX


class PreferenceData(LTuneData):
    """Rows of ``prompt`` + ``chosen`` + ``rejected`` responses, or chat-style rows.

    Two row layouts are read:

    * strings: ``{"prompt": str | messages, "chosen": str, "rejected": str}``;
    * conversations (UltraFeedback-binarized's ``chosen``/``rejected`` columns): ``chosen`` and ``rejected`` are
      ``messages`` lists that share every turn but the last, which is the assistant's answer. ``prompt`` is then
      optional and ignored (the shared turns are the prompt).

    A row whose chosen and rejected responses are equal, or whose response is empty, stops loading with an error
    naming the source, row and field. Both responses share the prompt's tokens: when a pair is longer than
    ``max_length`` the prompt loses the same tokens from the left for both (``truncate_prompt``), and a pair whose
    longer response alone does not fit is skipped; both are counted and logged.

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
            for name, msgs in (("chosen", chosen), ("rejected", rejected)):
                for j, m in enumerate(msgs):
                    if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
                        return f"field '{name}' item {j} is not a {{role, content}} object"
                if len(msgs) < 2 or msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
                    return f"field '{name}' must end with a non-empty assistant turn after at least one user turn"
            if chosen[:-1] != rejected[:-1]:
                return "fields 'chosen' and 'rejected' must share every turn before the last (one prompt per pair)"
        elif "prompt" not in row or (isinstance(row["prompt"], str) and not row["prompt"].strip()):
            return f"field 'prompt' (column '{self.columns.get('prompt', 'prompt')}') is missing or empty"
        if self._response(chosen).strip() == self._response(rejected).strip():
            return "fields 'chosen' and 'rejected' have the same response: a pair needs two different responses"
        return None

    @staticmethod
    def _response(value: str | list[dict]) -> str:
        return value[-1]["content"] if isinstance(value, list) else value

    def encode(self, row: dict) -> dict[str, Any]:
        chosen, rejected = row["chosen"], row["rejected"]
        prompt = chosen[:-1] if isinstance(chosen, list) else row["prompt"]
        ptext, ctext = self.render(prompt, self._response(chosen))
        _, rtext = self.render(prompt, self._response(rejected))
        p, c, r = self.tokens(ptext), self.tokens(ctext), self.tokens(rtext)
        longest = max(len(c), len(r))
        if len(p) + longest > self.max_length:
            if self.overlong == "skip" or longest >= self.max_length:
                raise Overlong
            p = p[len(p) + longest - self.max_length :]
            self._truncated += 1
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
