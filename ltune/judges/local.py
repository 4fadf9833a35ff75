"""``LMJudge``: a local causal LM as AI labeler, teacher and referee (preference from P("1")/P("2"), ratings,
chain-of-thought labeling, generation)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ltune.backbone import Backbone
from ltune.generation import HFSampler, decode, terminated
from ltune.judges.base import COT_REQUEST, ENDING, PREAMBLE, RATING_PREAMBLE, PairJudge
from ltune.kernels import IGNORE_INDEX
from ltune.packing import consecutive_groups, grouped_logprobs


def _next_token_logprobs(model, tokenizer, contexts: list[str], options: list[str]) -> Tensor:
    """``[N, K]`` log P(option_k | context_n), summed over the option's tokens (one batched forward; a context's K
    rows share it as a prefix, so it runs once for all K options: :mod:`ltune.packing`)."""
    ids, labels = [], []
    for ctx in contexts:
        c = tokenizer(ctx, add_special_tokens=False)["input_ids"]
        for opt in options:
            o = tokenizer(opt, add_special_tokens=False)["input_ids"]
            ids.append(c + o)
            labels.append([IGNORE_INDEX] * len(c) + o)
    batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    lab = tokenizer.pad({"input_ids": labels}, padding=True, return_tensors="pt")["input_ids"]
    lab = lab.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
    device = next(model.parameters()).device
    with torch.no_grad():
        groups = consecutive_groups(len(ids), len(options), device) if len(options) > 1 else None
        lp = grouped_logprobs(
            model, batch["input_ids"].to(device), batch["attention_mask"].to(device), lab.to(device), groups
        )
    return lp.logprobs.sum(1).view(len(contexts), len(options)).cpu()


class LMJudge(PairJudge):
    """A local causal LM as AI labeler: preference from P("1")/P("2") after the labeling prompt, and d-RLAIF ratings.

    Args:
        backbone: The labeler model (loaded on first use, in eval mode). ``None``: the policy's backbone when the judge
            serves an ltune run (the objective, DataModule or callback that owns it binds it; e.g. the SFT policy
            as its own labeler), the embedded ``tiny`` preset when used alone.
        preamble: Task description put first.
        few_shot: Worked examples (see :class:`PairJudge`).
        ending: Text after which ``"1"``/``"2"`` is read.
        chain_of_thought: First decode a rationale (greedy) after ``cot_request``, then read ``"1"``/``"2"`` after
            prompt + rationale + ending (the paper's CoT labeling).
        rationale_tokens: Token budget of the rationale.
        cot_request: Instruction that asks for the rationale.
        rating_preamble: Instruction of the 1-10 rating (d-RLAIF).
        batch_size: Contexts per forward.
    """

    def __init__(
        self,
        backbone: Backbone | None = None,
        preamble: str = PREAMBLE,
        few_shot: list[dict] | None = None,
        ending: str = ENDING,
        chain_of_thought: bool = False,
        rationale_tokens: int = 64,
        cot_request: str = COT_REQUEST,
        rating_preamble: str = RATING_PREAMBLE,
        batch_size: int = 32,
    ) -> None:
        super().__init__(preamble, few_shot, ending)
        self.backbone = backbone
        self.chain_of_thought, self.rationale_tokens, self.cot_request = chain_of_thought, rationale_tokens, cot_request
        self.rating_preamble, self.batch_size = rating_preamble, batch_size
        self.model = None

    def bind(self, backbone: Backbone | None) -> LMJudge:
        """Judge with ``backbone`` (the policy's, given by the run that owns this judge) when none was set."""
        if self.backbone is None and backbone is not None:
            self.backbone = backbone
        return self

    def _model(self):
        if self.model is None:
            self.model = self.bind(Backbone()).backbone.load_frozen()
        return self.model

    def _options(self, contexts: list[str], options: list[str]) -> Tensor:
        model = self._model()
        tok = self.backbone.tokenizer
        parts = [
            _next_token_logprobs(model, tok, contexts[i : i + self.batch_size], options)
            for i in range(0, len(contexts), self.batch_size)
        ]
        return torch.cat(parts)

    def _rationales(self, contexts: list[str]) -> list[str]:
        """Greedy rationales (chain-of-thought labeling), generated like any completion."""
        return self.complete(contexts, self.rationale_tokens, temperature=0.0)[0]

    def option_probs(self, contexts: list[str]) -> Tensor:
        if self.chain_of_thought:
            asks = [c[: -len(self.ending)] + self.cot_request + "\n" for c in contexts]
            contexts = [a + r.strip() + "\n" + self.ending for a, r in zip(asks, self._rationales(asks))]
        return self._options(contexts, ["1", "2"]).softmax(-1)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 256, temperature: float = 0.0) -> list[str]:
        return self.complete(prompts, max_new_tokens, temperature)[0]

    def complete(
        self, prompts: Sequence[str], max_new_tokens: int = 256, temperature: float = 0.0
    ) -> tuple[list[str], list[bool]]:
        model = self._model()
        tok = self.backbone.tokenizer
        out, cut = [], []
        for i in range(0, len(prompts), self.batch_size):
            enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[i : i + self.batch_size]]
            tok.padding_side = "left"
            try:
                batch = tok.pad({"input_ids": enc}, padding=True, return_tensors="pt")
            finally:
                tok.padding_side = "right"
            device = next(model.parameters()).device
            samples = HFSampler()(
                model,
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
            out += [t.strip() for t in decode(tok, samples)]
            cut += (~terminated(samples, tok.eos_token_id)).tolist()
        return out, cut

    def rating(self, contexts: Sequence[str]) -> Tensor:
        """Expected rating under the renormalised probabilities of the strings ``"1/10"`` .. ``"10/10"``."""
        probs = self._options(list(contexts), [f"{k}/10" for k in range(1, 11)]).softmax(-1)
        return (probs @ torch.arange(1, 11, dtype=probs.dtype)).float()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        """d-RLAIF reward: the expected 1-10 rating under the renormalised probabilities of ``"k/10"``, rescaled to
        [-1, 1] as (E[k] - 5.5) / 4.5. Whole option strings are scored, so ``"1"`` and ``"10"`` stay distinct."""
        contexts = [
            f"{self.rating_preamble}\n\nQuestion: {p}\nResponse: {r}\nRating: " for p, r in zip(prompts, responses)
        ]
        probs = self._options(contexts, [f"{k}/10" for k in range(1, 11)]).softmax(-1)
        expected = probs @ torch.arange(1, 11, dtype=probs.dtype)
        return ((expected - 5.5) / 4.5).float()
