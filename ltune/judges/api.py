"""``APIJudge``: the same labeler, teacher and rater through an OpenAI-compatible completions endpoint."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

import torch
from torch import Tensor

from ltune.judges.base import ENDING, PREAMBLE, PairJudge

_RATING = re.compile(r"\s*(10|[1-9])(?!\d)")


class APIJudge(PairJudge):
    """The same labeler through an OpenAI-compatible completions endpoint: ``"1"``/``"2"`` are read from the
    ``top_logprobs`` of the first generated token (``max_tokens=1``, ``temperature=0``). A choice absent from the
    top list counts as probability 0; both absent is an error (raise ``top_logprobs``).

    Args:
        model: Model name on the server.
        base_url: Server address, e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: Name of the environment variable that holds the API key. The key itself is never an argument,
            so it never lands in a run's ``config.yaml``, hyperparameters, W&B config or logs. Unset or empty: a
            placeholder key (local servers accept any).
        top_logprobs: Alternatives requested per token (OpenAI allows up to 20; vLLM's ``max_logprobs``).
        preamble: Task description put first.
        few_shot: Worked examples (see :class:`PairJudge`).
        ending: Text after which ``"1"``/``"2"`` is read.
        timeout: Seconds per request.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        top_logprobs: int = 20,
        preamble: str = PREAMBLE,
        few_shot: list[dict] | None = None,
        ending: str = ENDING,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(preamble, few_shot, ending)
        from openai import OpenAI

        self.model, self.top_logprobs, self.api_key_env = model, top_logprobs, api_key_env
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", timeout=timeout)

    def option_probs(self, contexts: list[str]) -> Tensor:
        out = self.client.completions.create(
            model=self.model, prompt=contexts, max_tokens=1, temperature=0.0, logprobs=self.top_logprobs
        )
        rows = [None] * len(contexts)
        for choice in out.choices:
            top = choice.logprobs.top_logprobs[0]
            lp = [top.get("1", -math.inf), top.get("2", -math.inf)]
            if lp == [-math.inf, -math.inf]:
                raise ValueError(f"neither '1' nor '2' among the top {self.top_logprobs} tokens; raise top_logprobs")
            rows[choice.index] = lp
        return torch.tensor(rows, dtype=torch.float64).softmax(-1).float()

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 256, temperature: float = 0.0) -> list[str]:
        return self.complete(prompts, max_new_tokens, temperature)[0]

    def complete(
        self, prompts: Sequence[str], max_new_tokens: int = 256, temperature: float = 0.0
    ) -> tuple[list[str], list[bool]]:
        out = self.client.completions.create(
            model=self.model, prompt=list(prompts), max_tokens=max_new_tokens, temperature=temperature
        )
        texts, cut = [""] * len(prompts), [False] * len(prompts)
        for choice in out.choices:
            texts[choice.index], cut[choice.index] = choice.text.strip(), choice.finish_reason == "length"
        return texts, cut

    def rating(self, contexts: Sequence[str]) -> Tensor:
        """The integer 1-10 at the start of a greedy continuation (``"7"``, ``"7/10"``); NaN when there is none."""
        values = []
        for text in self.generate(contexts, max_new_tokens=4, temperature=0.0):
            m = _RATING.match(text)
            values.append(float(m.group(1)) if m else math.nan)
        return torch.tensor(values, dtype=torch.float32)
