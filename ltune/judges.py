"""AI labelers (RLAIF, Lee et al., 2023, arXiv:2309.00267): a pair's preference read from an LM's probabilities of
"1" and "2", averaged over both orders to remove position bias, and a 1-10 rating rescaled to [-1, 1] (d-RLAIF).

``LMJudge`` runs a local causal LM (any ``Backbone``: the tiny preset, a Hub id, a folder, the policy itself);
``APIJudge`` asks an OpenAI-compatible server (vLLM, TGI, llama.cpp, OpenAI) through the ``openai`` client.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ltune.backbone import Backbone, completion_logprobs
from ltune.generation import HFSampler, decode, terminated
from ltune.kernels import IGNORE_INDEX
from ltune.problems import solve
from ltune.rewards import extract_answer, is_equivalent

PREAMBLE = "A good response answers the question correctly and ends with 'The answer is X.'"
ENDING = "Preferred Response="
COT_REQUEST = "Explain which response is better, then give its number."
RATING_PREAMBLE = "Rate how correct and helpful the response is on a scale from 1 to 10."


class PairJudge:
    """Renders the labeling prompt (preamble, optional few-shot, the sample, ending) and debiases by order.

    Args:
        preamble: Task description: what makes a good response.
        few_shot: Worked examples put before the sample: dicts with ``prompt``, ``response_1``, ``response_2`` and
            ``preferred`` (``"1"`` or ``"2"``).
        ending: Text after which the next token is read (``"1"`` or ``"2"``).
    """

    def __init__(self, preamble: str = PREAMBLE, few_shot: list[dict] | None = None, ending: str = ENDING) -> None:
        self.preamble, self.few_shot, self.ending = preamble, list(few_shot or []), ending

    def bind(self, backbone) -> PairJudge:
        """Offer the owning run's policy backbone to a judge that was given none (only ``LMJudge`` takes it)."""
        return self

    @staticmethod
    def sample(prompt: str, first: str, second: str) -> str:
        return f"Question: {prompt}\nResponse 1: {first}\nResponse 2: {second}\n"

    def context(self, prompt: str, first: str, second: str) -> str:
        """The labeling prompt up to where ``"1"``/``"2"`` is read."""
        shots = "".join(
            f"{self.sample(s['prompt'], s['response_1'], s['response_2'])}{self.ending}{s['preferred']}\n\n"
            for s in self.few_shot
        )
        return f"{self.preamble}\n\n{shots}{self.sample(prompt, first, second)}{self.ending}"

    def option_probs(self, contexts: list[str]) -> Tensor:
        """``[N, 2]`` probabilities of ``"1"`` and ``"2"`` after each context, renormalised over the two."""
        raise NotImplementedError

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 256, temperature: float = 0.0) -> list[str]:
        """Free text that continues each raw prompt (a teacher's answers and new instructions in Lion)."""
        raise NotImplementedError

    def complete(
        self, prompts: Sequence[str], max_new_tokens: int = 256, temperature: float = 0.0
    ) -> tuple[list[str], list[bool]]:
        """:meth:`generate`'s texts and whether each was cut by ``max_new_tokens`` (no end-of-sequence token before
        the budget ran out; ``finish_reason == "length"`` from an API). This default cannot tell: nothing is cut."""
        texts = self.generate(prompts, max_new_tokens, temperature)
        return texts, [False] * len(texts)

    def rating(self, contexts: Sequence[str]) -> Tensor:
        """``[N]`` 1-10 rating that follows each context (``"Score: "``); NaN where none can be read."""
        raise NotImplementedError

    def rate_pair(
        self, questions: Sequence[str], first: Sequence[str], second: Sequence[str], template: str
    ) -> tuple[list[float], list[float]]:
        """1-10 ratings of the answers in slot 1 and slot 2 (Lion's referee): :meth:`rating` after ``template``
        (``{question}``, ``{first}``, ``{second}``, ``{slot}``) rendered once per slot; NaN where none can be read."""
        ctx = [
            template.format(question=q, first=a, second=b, slot=slot)
            for slot in (1, 2)
            for q, a, b in zip(questions, first, second)
        ]
        scores = self.rating(ctx).tolist()
        return scores[: len(questions)], scores[len(questions) :]

    def preference(
        self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]
    ) -> tuple[Tensor, dict[str, float]]:
        """Soft labels P(a preferred over b), averaged over the orders (a, b) and (b, a).

        Returns:
            ``[N]`` float32 probabilities and metrics ``p_first_position`` (share of the 2N single-order judgments
            that prefer slot 1 before debiasing; 0.5 = no position bias) and ``entropy`` (mean label entropy, nats).
        """
        n = len(prompts)
        contexts = [self.context(p, a, b) for p, a, b in zip(prompts, responses_a, responses_b)]
        contexts += [self.context(p, b, a) for p, a, b in zip(prompts, responses_a, responses_b)]
        probs = self.option_probs(contexts)
        p_a = 0.5 * (probs[:n, 0] + probs[n:, 1])  # un-swap the second order: a sits in slot 2 there
        ent = -(p_a * p_a.clamp_min(1e-12).log() + (1 - p_a) * (1 - p_a).clamp_min(1e-12).log())
        metrics = {"p_first_position": (probs[:, 0] > 0.5).float().mean().item(), "entropy": ent.mean().item()}
        return p_a.float(), metrics


def _next_token_logprobs(model, tokenizer, contexts: list[str], options: list[str]) -> Tensor:
    """``[N, K]`` log P(option_k | context_n), summed over the option's tokens (one batched forward)."""
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
        lp = completion_logprobs(
            model, batch["input_ids"].to(device), batch["attention_mask"].to(device), lab.to(device)
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
        model = self._model()
        tok = self.backbone.tokenizer
        enc = [tok(c, add_special_tokens=False)["input_ids"] for c in contexts]
        tok.padding_side = "left"
        try:
            batch = tok.pad({"input_ids": enc}, padding=True, return_tensors="pt")
        finally:
            tok.padding_side = "right"
        samples = HFSampler()(
            model, batch["input_ids"], batch["attention_mask"], max_new_tokens=self.rationale_tokens,
            temperature=0.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
        return decode(tok, samples)

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
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device), max_new_tokens=max_new_tokens,
                temperature=temperature, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            )  # fmt: skip
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


class VerifierJudge(PairJudge):
    """A referee that checks answers instead of reading an LM's opinion: an answer rates ``correct`` when its final
    answer (:func:`ltune.rewards.extract_answer`) is equivalent to the reference that ``solver`` computes from the
    question, ``wrong`` otherwise, and NaN (unjudged) when the solver cannot read the question. It stands in for a
    strong LM referee on tasks a program can solve, such as the embedded tasks (:func:`ltune.problems.solve`, which
    also reads questions a model wrote). It rates, and scores as a reward (``score``); it cannot
    generate or give pair preferences.

    Args:
        solver: Question -> reference answer, or None when unreadable (default: the embedded tasks' ``solve``).
        correct: Rating of a verified answer.
        wrong: Rating of any other answer (no final answer included).
    """

    def __init__(
        self, solver: Callable[[str], str | None] | None = None, correct: float = 10.0, wrong: float = 1.0
    ) -> None:
        super().__init__()
        self.solver, self.correct, self.wrong = solver or solve, correct, wrong

    def verdicts(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        """The rating of each answer to its question."""
        out = []
        for question, answer in zip(questions, answers):
            reference = self.solver(question)
            if reference is None:
                out.append(math.nan)
            else:
                out.append(self.correct if is_equivalent(extract_answer(answer), reference) else self.wrong)
        return out

    def rate_pair(
        self, questions: Sequence[str], first: Sequence[str], second: Sequence[str], template: str = ""
    ) -> tuple[list[float], list[float]]:
        """The two slots' ratings; ``template`` is ignored (no prompt is rendered), so the order cannot matter."""
        return self.verdicts(questions, first), self.verdicts(questions, second)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        """A reward on ``LMJudge.score``'s [-1, 1] scale, so it can serve as a sequence scorer (e.g. MoDS's reward):
        +1 for a verified answer, -1 for any other, NaN when the question is unreadable."""
        return torch.tensor([v if math.isnan(v) else 1.0 if v == self.correct else -1.0
                             for v in self.verdicts(prompts, responses)])  # fmt: skip


_RATING = re.compile(r"\s*(10|[1-9])(?!\d)")

__all__ = ["APIJudge", "LMJudge", "PairJudge", "VerifierJudge"]
