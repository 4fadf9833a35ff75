"""Task formats: instruction (SFT), unpaired preference (KTO), critique (CFT) and prompts (RL, evaluation)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from ltune.datamodules.base import LTuneData, with_input
from ltune.datamodules.chat import LossOn, chat_messages
from ltune.datamodules.sources import SourceLike, as_source
from ltune.datamodules.unpaired import MaybeUnpaired, kl_partners, with_kl_sequences


class InstructionData(LTuneData):
    """Supervised fine-tuning rows in every layout of TRL's dataset formats, with TRL's column names:

    * conversational ``messages`` (any number of turns; system and tool turns go to the model's template), or
      ShareGPT ``conversations`` (``{from, value}`` messages, roles ``human``/``gpt``: mapped by ``message_keys``
      and ``roles``, ShareGPT's by default): by default every assistant turn is trained (``loss_on``);
    * prompt-completion: ``prompt`` + ``completion`` (or ``response``), strings or message lists; the completion
      is trained. String rows are wrapped in the model's chat template (the prompt as a user turn), or with
      ``template: raw`` joined and tokenized as TRL does;
    * language modelling: ``text``, every token trained, tokenized raw with the EOS appended (no template).

    An optional ``input`` is appended to a string prompt after a blank line (Alpaca: ``columns: {prompt:
    instruction, completion: output}``); an optional ``tools`` list (or its JSON string) goes to the template.

    Args:
        loss_on: Which tokens of a conversation carry loss: ``"assistant"`` (every assistant turn; TRL's
            ``assistant_only_loss``), ``"last_assistant"`` (the last one), or ``"all"`` (the whole sequence, TRL's
            default). A prompt-completion row trains its completion (``"all"``: the whole row).
        message_keys: Role and content keys of your messages, e.g. ``{"role": "from", "content": "value"}``
            (ShareGPT's, used by default for messages that have ``from``/``value``).
        roles: Your role names mapped onto the template's, e.g. ``{"human": "user", "gpt": "assistant"}`` (the
            default covers ShareGPT's).
        **kwargs: Arguments of :class:`LTuneData`.
    """

    fields = {}
    optional = {
        "prompt": (str, list),
        "completion": (str, list),
        "response": (str, list),
        "input": str,
        "messages": list,
        "conversations": list,
        "text": str,
        "tools": (list, str),
        "answer": str,
        "category": str,
    }

    def __init__(
        self,
        *args: Any,
        loss_on: LossOn = "assistant",
        message_keys: dict[str, str] | None = None,
        roles: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loss_on, self.message_keys, self.roles = loss_on, message_keys, roles

    def check(self, row: dict) -> str | None:
        """Validate a row and bring its messages to ``{role, content}`` (ShareGPT's mapped, ``conversations``
        moved to ``messages``); ``response`` stays as given (ltune's older name of ``completion``)."""
        conv = "messages" if "messages" in row else "conversations" if "conversations" in row else None
        try:
            if conv:
                row["messages"] = chat_messages(row.pop(conv), self.message_keys, self.roles)
                if not any(m["role"] == "assistant" and m["content"].strip() for m in row["messages"]):
                    return f"field '{conv}' has no non-empty assistant turn to train on"
                return None
            if "text" in row and "prompt" not in row:
                return None if row["text"].strip() else f"field 'text' (column '{self._col('text')}') is empty"
            reply = (
                "response"
                if "response" in row or ("completion" not in row and "response" in self.columns)
                else "completion"
            )
            for name in ("prompt", reply):
                value = row.get(name)
                if isinstance(value, list):
                    row[name] = chat_messages(value, self.message_keys, self.roles)
                elif not isinstance(value, str) or not value.strip():
                    return (
                        f"field '{name}' (column '{self._col(name)}') is missing or empty (or give 'messages', "
                        "'conversations' or 'text')"
                    )
        except ValueError as e:
            return f"field '{conv or name}' {e}"
        if isinstance(completion_of(row), list) and not any(m["role"] == "assistant" for m in completion_of(row)):
            return f"field '{name}' (column '{self._col(name)}') has no assistant turn"
        return None

    def _col(self, name: str) -> str:
        return self.columns.get(name, name)

    def encode(self, row: dict) -> dict[str, Any]:
        tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else row.get("tools")
        if "messages" in row:
            return self.encode_chat(self.messages(row["messages"]), loss_on=self.loss_on, tools=tools)
        if "prompt" not in row:  # language modelling
            ids = self.tokenizer(self.with_eos(row["text"]))["input_ids"]
            return self.fit_length(ids, list(ids))
        prompt, completion = row["prompt"], completion_of(row)
        if isinstance(prompt, str) and isinstance(completion, str):
            pair = self.encode_pair(with_input(prompt, row), completion)
            return {**pair, "labels": list(pair["input_ids"])} if self.loss_on == "all" else pair
        msgs = self.messages(prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}])
        reply = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        return self.encode_chat(msgs + reply, loss_on=self.loss_on, tools=tools, first_trained=len(msgs))


class UnpairedPreferenceData(InstructionData):
    """Unpaired preference rows (TRL's layout; KTO's data): a ``prompt``, one ``completion`` and a boolean
    ``label`` (desirable or not), strings or message lists. Validated and tokenized as a prompt-completion row of
    :class:`InstructionData` (the completion is trained); batches also carry ``label``, a bool tensor ``[B]``.

    Paired preference rows (``chosen``/``rejected``, any layout of :class:`PreferenceData`) are unpaired first, as
    TRL's KTO trainer does (:class:`~ltune.datamodules.unpaired.MaybeUnpaired`): ``EmbeddedTasks(format=preference)``
    or a DPO data set trains KTO as it is.

    For KTO's KL estimate each training or validation row also gets a mismatched sequence, its prompt followed by the
    completion of another row of its split, chosen when the split is encoded by a seeded random cycle through all its
    rows (:func:`~ltune.datamodules.unpaired.kl_partners`: never the row itself, fixed for the run, whatever the batch
    size, shuffling or number of ranks; TRL instead rotates completions within each batch and so must not shuffle).
    Batches carry it as ``KL_input_ids``/``KL_attention_mask``/``KL_labels`` (``-100`` outside that completion),
    and ``pair``, a long tensor ``[B]``: the optional ``pair`` field (rows of one preference pair share it; set when
    pairs are unpaired), -1 where absent. Constructor arguments are those of :class:`InstructionData`.
    """

    fields = {"prompt": (str, list), "completion": (str, list), "label": bool}
    optional = {"tools": (list, str), "category": str, "pair": int}

    def load_rows(
        self, spec: SourceLike, fields: dict, optional: dict, check: Callable[[dict], str | None] | None = None
    ) -> list[dict]:
        if fields is self.fields:  # training or validation rows (not evaluation prompts): unpaired if paired
            spec = MaybeUnpaired(as_source(spec), self.columns)
        return super().load_rows(spec, fields, optional, check)

    def _encode_all(self, split: str, rows: list[dict], fn: Callable[[dict], dict]) -> list[dict]:
        out = super()._encode_all(split, rows, fn)
        if fn != self.encode:  # evaluation prompts
            return out
        return with_kl_sequences(out, kl_partners(len(out), self.seed, split), self.max_length)

    def encode(self, row: dict) -> dict[str, Any]:
        return {**super().encode(row), "label": row["label"], "pair": row.get("pair", -1)}

    def collate(self, examples: list[dict]) -> dict[str, Any]:
        batch = super().collate(examples)
        if "label" in batch:
            batch["label"] = torch.tensor(batch["label"], dtype=torch.bool)
            batch["pair"] = torch.tensor(batch["pair"], dtype=torch.long)
        return batch


def completion_of(row: dict) -> str | list[dict]:
    """A prompt-completion row's completion: TRL's ``completion`` column, or ltune's older ``response``."""
    return row["completion"] if "completion" in row else row["response"]


CRITIQUE_INSTRUCTION = "Please critique whether the following solution to the question is correct."


class CritiqueData(LTuneData):
    """Critique Fine-Tuning rows (Wang et al., 2025, arXiv:2501.17703): ``question`` + candidate ``solution`` ->
    ``critique``. The loss covers the critique only; question and noisy solution sit in the prompt::

        {instruction}\\n\\nQuestion:\\n{question}\\n\\nSolution:\\n{solution}

    Use :class:`InstructionData` with ``columns`` for Alpaca-formatted critique sets such as WebInstruct-CFT.
    Evaluate a CFT model as a solver (``eval_prompts`` holds ordinary question/answer rows).

    Args:
        instruction: The critique instruction put before the question.
        **kwargs: Arguments of :class:`LTuneData`.
    """

    fields = {"question": str, "solution": str, "critique": str}
    optional = {"answer": str, "category": str}

    def __init__(self, *args: Any, instruction: str = CRITIQUE_INSTRUCTION, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instruction = instruction

    def encode(self, row: dict) -> dict[str, Any]:
        prompt = f"{self.instruction}\n\nQuestion:\n{row['question']}\n\nSolution:\n{row['solution']}"
        return self.encode_pair(prompt, row["critique"])


class PromptData(LTuneData):
    """Prompt-only rows (TRL's layout for GRPO-family objectives, and evaluation): a ``prompt``, a string or messages,
    with an optional reference ``answer``. Batches carry left-padded ``prompt_ids``/``prompt_mask``, the answers
    (``None`` when absent), categories, the prompts as given (``prompt``), ``columns`` (each row's other columns by
    name, for reward functions, as TRL passes them) and ``source_row`` (``"<file>: row <n>"``). Constructor
    arguments are those of :class:`LTuneData`.
    """

    fields = {"prompt": (str, list)}
    optional = {"answer": str, "category": str}
    keep_columns = True

    def check(self, row: dict) -> str | None:
        if isinstance(row["prompt"], list):
            try:
                row["prompt"] = chat_messages(row["prompt"])
            except ValueError as e:
                return f"field 'prompt' {e}"
        return None

    def encode(self, row: dict) -> dict[str, Any]:
        return {
            "prompt_ids": self.encode_prompt(row["prompt"]),
            "answer": row.get("answer"),
            "category": row.get("category", "all"),
            "columns": row.get("columns", {}),
            "prompt": row["prompt"],
            "source_row": row.get("source_row"),
        }
