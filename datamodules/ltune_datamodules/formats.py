"""Task formats: instruction (SFT), critique (CFT) and prompts (RL, evaluation)."""

from __future__ import annotations

from typing import Any

from ltune.datamodules.base import LTuneData, with_input


class InstructionData(LTuneData):
    """Instruction tuning rows: ``prompt`` + ``response``, or a chat ``messages`` list ending with the assistant turn.

    An optional ``input`` field is appended to the prompt after a blank line (Alpaca layout: map ``prompt`` to
    ``instruction`` and ``response`` to ``output`` with ``columns``). With ``messages``, the loss covers the last
    assistant turn; earlier turns are context. Constructor arguments are those of :class:`LTuneData`.
    """

    fields = {}
    optional = {"prompt": str, "response": str, "input": str, "messages": list, "answer": str, "category": str}

    def check(self, row: dict) -> str | None:
        if "messages" in row:
            msgs = row["messages"]
            for j, m in enumerate(msgs):
                if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
                    return f"field 'messages' item {j} is not a {{role, content}} object"
            if len(msgs) < 2 or msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
                return "field 'messages' must end with a non-empty assistant turn after at least one user turn"
            return None
        for name in ("prompt", "response"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                col = self.columns.get(name, name)
                return f"field '{name}' (column '{col}') is missing or empty (or give a 'messages' list)"
        return None

    def encode(self, row: dict) -> dict[str, Any]:
        if "messages" in row:
            return self.encode_pair(row["messages"][:-1], row["messages"][-1]["content"])
        prompt = with_input(row["prompt"], row)
        return self.encode_pair(prompt, row["response"])


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
    """Prompts with an optional reference ``answer`` (RL rollouts and evaluation). Batches carry left-padded
    ``prompt_ids``/``prompt_mask``, the answers (``None`` when absent) and categories. Constructor arguments are
    those of :class:`LTuneData`.
    """

    fields = {"prompt": (str, list)}
    optional = {"answer": str, "category": str}

    def encode(self, row: dict) -> dict[str, Any]:
        return {
            "prompt_ids": self.encode_prompt(row["prompt"]),
            "answer": row.get("answer"),
            "category": row.get("category", "all"),
        }
