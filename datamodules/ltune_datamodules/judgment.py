"""Judgment rows for CUT (Xu et al., 2023, arXiv:2312.14591): instruction, response, judgment, positive/negative."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ltune.datamodules.base import LTuneData, with_input
from ltune.datamodules.batching import pad_right
from ltune.datamodules.sources import DataError
from ltune.kernels import IGNORE_INDEX

JUDGMENT_TEMPLATE = "{instruction}\n\nJudgment of the response: {judgment}"


class JudgmentData(LTuneData):
    """Rows of ``instruction`` (+ optional Alpaca ``input``), ``response``, ``judgment`` and ``label``.

    ``label`` is ``"positive"`` or ``"negative"``. A positive row is Align-P: ``instruction -> response`` (its
    judgment is dropped, as in the released code). A negative row gives two sequences with the same response
    tokens: Align-N, whose prompt is ``judgment_template`` (instruction and judgment), and Misalign, whose prompt is
    the instruction alone. The response is tokenized once per context and must give the same tokens in both (an
    error names the row otherwise); a long prompt loses tokens from the left (``truncate_prompt``) so the response
    survives, as the code's left truncation does.

    Batches hold one forward's rows: ``input_ids``/``attention_mask``/``labels`` of shape ``[B + N, T]``, the B
    Align-P/Align-N sequences first, then the N Misalign sequences of the batch's negative rows, whose row
    indices in the first block are ``negative_rows`` (a list). ``labels`` is ``-100`` outside responses.

    Args:
        judgment_template: Align-N prompt, with ``{instruction}`` and ``{judgment}`` placeholders.
        **kwargs: Arguments of :class:`LTuneData`.
    """

    fields = {"instruction": str, "response": str, "label": str}
    optional = {"judgment": str, "input": str, "answer": str, "category": str}

    def __init__(self, *args: Any, judgment_template: str = JUDGMENT_TEMPLATE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.judgment_template = judgment_template

    def check(self, row: dict) -> str | None:
        col = self.columns.get("label", "label")
        if row["label"] not in ("positive", "negative"):
            return f"field 'label' (column '{col}') is {row['label']!r}, expected 'positive' or 'negative'"
        if row["label"] == "negative" and not row.get("judgment", "").strip():
            return f"field 'judgment' (column '{self.columns.get('judgment', 'judgment')}') is missing or empty"
        return None

    def encode(self, row: dict) -> dict[str, Any]:
        instruction = with_input(row["instruction"], row)
        plain = self.encode_pair(instruction, row["response"])
        if row["label"] == "positive":
            return {"sequences": [plain], "category": row.get("category", "all")}
        prompt = self.judgment_template.format(instruction=instruction, judgment=row["judgment"])
        judged = self.encode_pair(prompt, row["response"])
        if [t for t in judged["labels"] if t != IGNORE_INDEX] != [t for t in plain["labels"] if t != IGNORE_INDEX]:
            raise DataError(f"the response of {instruction[:60]!r} tokenizes differently with and without the judgment")
        return {"sequences": [judged, plain], "category": row.get("category", "all")}

    def collate(self, examples: Sequence[dict]) -> dict[str, Any]:
        if "prompt_ids" in examples[0]:  # eval prompts
            return super().collate(examples)
        first = [e["sequences"][0] for e in examples]
        negative_rows = [i for i, e in enumerate(examples) if len(e["sequences"]) == 2]
        misaligned = [examples[i]["sequences"][1] for i in negative_rows]
        seqs = first + misaligned
        input_ids, attention_mask = pad_right([s["input_ids"] for s in seqs], self.tokenizer.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": pad_right([s["labels"] for s in seqs], IGNORE_INDEX)[0],
            "negative_rows": negative_rows,
            "category": [e["category"] for e in examples],
        }
