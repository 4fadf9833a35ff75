"""The pair judge's protocol: the labeling prompt (preamble, few-shot, the sample, ending), order debiasing, and the
1-10 rating rescaled to [-1, 1] (d-RLAIF); the judges (local LM, API, verifier) implement what it leaves open."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

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
