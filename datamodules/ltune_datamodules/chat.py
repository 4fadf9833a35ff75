"""Conversations as token ids and loss labels, through the model's own chat template.

The assistant turns are found by rendering, never by a per-model table, so templates without ``{% generation %}``
markers (SmolLM2's, Qwen's, Llama's) work: the span of assistant turn ``i`` starts where the render of the turns
before it with the generation prompt ends, and ends where the render through turn ``i`` ends, less the template's
glue after the end-of-turn token (ChatML's newline). That needs a template that renders every prefix of a
conversation as a prefix of the whole (ChatML, Llama 3 and Qwen2.5 do); one that rewrites earlier turns (e.g. drops
their reasoning) stops with an error naming the turn.

The whole conversation is tokenized once, as TRL tokenizes it, and tokens are assigned to spans by their character
offsets (a fast tokenizer); a slow tokenizer (the ``tiny`` preset's bytes) is tokenized span by span.
"""

from __future__ import annotations

from typing import Any, Literal

from ltune.datamodules.sources import DataError
from ltune.kernels import IGNORE_INDEX

LossOn = Literal["assistant", "last_assistant", "all"]
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "tool": "tool", "function_call": "assistant", "observation": "tool"}  # fmt: skip


def chat_messages(value: Any, keys: dict[str, str] | None = None, roles: dict[str, str] | None = None) -> list[dict]:
    """``value`` as ``{role, content, ...}`` messages. ``keys`` names the role and content keys of your messages
    (ShareGPT: ``{"role": "from", "content": "value"}``, the default for messages that have ``from``/``value``);
    ``roles`` maps your role names onto the template's (ShareGPT's ``human``/``gpt`` by default). Raises
    ``ValueError`` naming the item that is not a message."""
    if not isinstance(value, list) or not value:
        raise ValueError("is not a non-empty list of messages")
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, dict):
            raise ValueError(f"item {j} is not a message object")
        k = keys or ({"role": "from", "content": "value"} if "from" in m and "role" not in m else {})
        role, content = m.get(k.get("role", "role")), m.get(k.get("content", "content"))
        if not isinstance(role, str) or not (isinstance(content, str) or m.get("tool_calls")):
            raise ValueError(f"item {j} is not a {{role, content}} message")
        rest = {n: v for n, v in m.items() if n not in (k.get("role", "role"), k.get("content", "content"))}
        out.append({**rest, "role": (roles or SHAREGPT_ROLES).get(role, role), "content": content or ""})
    return out


def render(tok, messages: list[dict], generation_prompt: bool = False, tools: list | None = None) -> str:
    """The template's text of ``messages`` (with the assistant header after them when ``generation_prompt``)."""
    return tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, tools=tools or None
    )


def assistant_spans(tok, messages: list[dict], tools: list | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character span of each assistant turn's reply."""
    text = render(tok, messages, tools=tools)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, through = render(tok, messages[:i], True, tools), render(tok, messages[: i + 1], False, tools)
        if not (text.startswith(before) and text.startswith(through) and through.startswith(before)):
            raise DataError(
                f"the chat template does not render turn {i} (assistant) as a prefix of the conversation: its "
                "assistant turns cannot be found by rendering; use loss_on: all, or a prefix-preserving template"
            )
        reply = through[len(before) :]
        spans.append((len(before), len(before) + len(reply.rstrip())))  # no glue after the end-of-turn token
    return text, spans


def tokenize_spans(tok, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` and, per token, the index of the span it starts in (-1: none)."""
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        where = [next((k for k, (s, e) in enumerate(spans) if s <= a < e), -1) for a, _ in enc["offset_mapping"]]
        return enc["input_ids"], where
    ids, where, at = [], [], 0
    for k, (s, e) in enumerate([*spans, (len(text), len(text))]):
        for piece, flag in ((text[at:s], -1), (text[s:e], k)):
            if piece:
                new = tok(piece, add_special_tokens=False)["input_ids"]
                ids += new
                where += [flag] * len(new)
        at = e
    return ids, where


def encode_conversation(
    tok, messages: list[dict], loss_on: LossOn = "assistant", tools: list | None = None, first_trained: int = 0
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of a conversation: every assistant reply trained (``"assistant"``), the last one
    only (``"last_assistant"``), or every token (``"all"``). Assistant turns before index ``first_trained`` of
    ``messages`` are context (a prompt-completion row's prompt). The ids are the same whatever ``loss_on``."""
    if loss_on == "all" and getattr(tok, "is_fast", False):  # no spans needed: any template
        ids, _ = tokenize_spans(tok, render(tok, messages, tools=tools), [])
        return {"input_ids": ids, "labels": list(ids)}
    text, spans = assistant_spans(tok, messages, tools)
    ids, where = tokenize_spans(tok, text, spans)  # a slow tokenizer is cut at every reply, whichever are trained
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained = {k for k, i in enumerate(turns) if i >= first_trained}
    if loss_on == "last_assistant":
        trained = {max(trained)} if trained else set()
    keep = [loss_on == "all" or k in trained for k in where]
    return {"input_ids": ids, "labels": [t if y else IGNORE_INDEX for t, y in zip(ids, keep)]}
