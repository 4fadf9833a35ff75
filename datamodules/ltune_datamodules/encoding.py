"""Rows to token ids: render (chat template, raw or plain text), tokenize, apply the length policy. A mixin of
:class:`ltune.datamodules.base.LTuneData`, which holds the tokenizer, ``template``, ``system`` and the length
policy these methods read."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ltune.datamodules.batching import pad_left
from ltune.datamodules.chat import LossOn, encode_conversation, render
from ltune.datamodules.length import cut_pair, cut_sequence
from ltune.datamodules.sources import DataError
from ltune.kernels import IGNORE_INDEX


class Encoding:
    """Rendering and tokenization of :class:`~ltune.datamodules.base.LTuneData`."""

    def messages(self, prompt: str | list[dict]) -> list[dict]:
        """Chat messages of a prompt: a string becomes one user turn (after the optional system message)."""
        msgs = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        system = self.system_message()
        if system and not any(m["role"] == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": system})
        return msgs

    def render(self, prompt: str | list[dict], completion: str | None = None) -> tuple[str, str | None]:
        """Prompt text (ending where the model starts to answer) and completion text (ending with the stop token)."""
        tok = self.tokenizer
        if self.is_raw(prompt):
            return prompt, None if completion is None else self.with_eos(completion)
        msgs = self.messages(prompt)
        if self.template != "plain" and tok.chat_template:  # message rows use the template under "raw" too
            ptext = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            if completion is None:
                return ptext, None
            full = tok.apply_chat_template([*msgs, {"role": "assistant", "content": completion}], tokenize=False)
            if not full.startswith(ptext):
                raise DataError("the chat template does not render the prompt as a prefix of the conversation")
            return ptext, full[len(ptext) :].rstrip("\n")
        ptext = "".join(f"{m['content']}\n" for m in msgs)
        return ptext, None if completion is None else completion + (tok.eos_token or "")

    def with_eos(self, text: str) -> str:
        """``text`` ending with the tokenizer's EOS string, appended unless already there (as TRL does)."""
        eos = self.tokenizer.eos_token or ""
        return text if text.endswith(eos) else text + eos

    def is_raw(self, prompt: str | list[dict]) -> bool:
        return self.template == "raw" and isinstance(prompt, str)

    def tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def split_tokens(
        self, prompt: str | list[dict], ptext: str, ctexts: list[str]
    ) -> tuple[list[int], list[list[int]]]:
        """Prompt ids and each completion's ids. Rendered text: each part alone (the template's tokens bound them).
        Raw text, as TRL: the prompt and the prompt + completion with the tokenizer's special tokens, the completion
        starting where they part (the shortest such prefix over ``ctexts``)."""
        if not self.is_raw(prompt):
            return self.tokens(ptext), [self.tokens(c) for c in ctexts]
        p = self.tokenizer(ptext)["input_ids"]
        full = [self.tokenizer(ptext + c)["input_ids"] for c in ctexts]
        n = min(next((i for i, (a, b) in enumerate(zip(p, f)) if a != b), min(len(p), len(f))) for f in full)
        return full[0][:n], [f[n:] for f in full]

    def encode_pair(self, prompt: str | list[dict], completion: str) -> dict[str, list[int]]:
        """Token ids and labels (``-100`` on the prompt) of one prompt/completion, after the length policy."""
        ptext, ctext = self.render(prompt, completion)
        p, (c,) = self.split_tokens(prompt, ptext, [ctext])
        p, (c,), cut = cut_pair(p, [c], self.max_length, self.overlong)
        self._truncated += cut
        return {"input_ids": p + c, "labels": [IGNORE_INDEX] * len(p) + c}

    def encode_chat(
        self, messages: list[dict], loss_on: LossOn = "assistant", tools: list | None = None, first_trained: int = 0
    ) -> dict[str, list[int]]:
        """Token ids and labels of a whole conversation (:func:`ltune.datamodules.chat.encode_conversation`), after
        the length policy; a leading system message is never cut."""
        if not self.tokenizer.chat_template:
            raise DataError("conversation rows need a tokenizer with a chat template")
        enc = encode_conversation(self.tokenizer, messages, loss_on, tools, first_trained)
        system = messages[:1] if messages[0]["role"] == "system" else []
        keep = (lambda: len(self.tokens(render(self.tokenizer, system, tools=tools)))) if system else (lambda: 0)
        return self.fit_length(enc["input_ids"], enc["labels"], keep)

    def fit_length(
        self, ids: list[int], labels: list[int], keep: Callable[[], int] = lambda: 0
    ) -> dict[str, list[int]]:
        """``ids``/``labels`` within ``max_length`` by the length policy (``keep()``: leading tokens never cut)."""
        ids, labels, cut = cut_sequence(ids, labels, self.max_length, self.overlong, keep)
        self._truncated += cut
        return {"input_ids": ids, "labels": labels}

    def encode_prompt(self, prompt: str | list[dict]) -> list[int]:
        """Token ids of a prompt for generation (left-truncated to ``max_length``)."""
        text = self.render(prompt)[0]
        ids = self.tokenizer(text)["input_ids"] if self.is_raw(prompt) else self.tokens(text)
        return ids[-self.max_length :]

    def prompt_batch(self, prompts: Sequence[str | list[dict]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``[B, P]`` ids and attention mask of prompts rendered as training renders them (for generation
        by a callback: ReST-EM's samples, Lion's student answers, MoDS's necessity answers)."""
        return pad_left([self.encode_prompt(p) for p in prompts], self.tokenizer.pad_token_id)
