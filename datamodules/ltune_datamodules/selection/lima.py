"""LIMA (Zhou et al., NeurIPS 2023, "LIMA: Less Is More for Alignment", arXiv:2305.11206): a small curated set
(1,000 rows) of high-quality, diverse examples, trained with the recipe in ``configs/recipes/lima.yaml``.

LIMA curated by hand and by source-specific rules; this DataModule applies the paper's mechanical rules to any pool
and then draws for diversity:

* quality: response length within ``[min_chars, max_chars]`` (Stack Exchange: 1,200-4,096 characters) and no match
  of ``reject_patterns`` (first-person answers, references to other answers);
* diversity: k-center greedy (seeded) over instruction embeddings of the rows that pass, up to the budget, so the
  kept set covers the pool's topics instead of its densest one.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import torch

from ltune.backbone import Backbone
from ltune.datamodules.base import LTuneData
from ltune.datamodules.selection.base import Selection, instruction_text, pair_text
from ltune.datamodules.selection.geometry import k_center_greedy

REJECT = [r"(?i)\b(I|I'm|I've|my|me)\b", r"(?i)\b(as mentioned|other answers?|previous answer|this answer)\b"]


class LIMA(Selection):
    """LIMA's curated subset: rule-based quality filter, then k-center coverage over instructions to the budget.

    Args:
        pool: The candidate pool DataModule.
        budget: Rows to keep (LIMA: 1000): an int is a count, a float in (0, 1] a fraction of the pool.
        min_chars: Shortest response kept (LIMA's Stack Exchange rule: 1200; lower it for short-answer pools).
        max_chars: Longest response kept (4096).
        reject_patterns: Regular expressions; a response matching any is dropped (first person, references to other
            answers).
        embedder: ``None``: MiniLM of the instruction (offline package); a backbone: its last-token hidden state.
        seed: Seed of the first k-center.
        **kwargs: :class:`Selection`'s ``cache_dir``, ``report_dir``, ``score_chunk``, ``progress``.
        score_batch_size: Rows per embedding batch.
    """

    def __init__(
        self,
        pool: LTuneData,
        budget: int | float = 1000,
        min_chars: int = 1200,
        max_chars: int = 4096,
        reject_patterns: list[str] | None = None,
        embedder: Backbone | None = None,
        seed: int = 0,
        score_batch_size: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(pool, budget, score_batch_size=score_batch_size, **kwargs)
        self.min_chars, self.max_chars = min_chars, max_chars
        self.reject_patterns = list(REJECT if reject_patterns is None else reject_patterns)
        self.embedder, self.kcenter_seed = embedder, seed

    def scorer_config(self) -> dict[str, Any]:
        emb = "minilm" if self.embedder is None else dataclasses.asdict(self.embedder)
        # the patterns decide the cached `rejected_pattern` flags; the length rules are applied in choose
        return {**super().scorer_config(), "embedder": emb, "reject_patterns": self.reject_patterns}

    def score(self, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
        texts = [instruction_text(r) for r in rows]
        return {
            "response_chars": np.array([len(pair_text(r)[1]) for r in rows], dtype=np.float64),
            "rejected_pattern": np.array([self._rejected(pair_text(r)[1]) for r in rows]),
            "embedding": self.embed_texts(texts, names, self.embedder, "LIMA instruction embeddings"),
        }

    def _rejected(self, text: str) -> bool:
        return any(re.search(p, text) for p in self.reject_patterns)

    def quality(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        n = scores["response_chars"]
        return np.flatnonzero((n >= self.min_chars) & (n <= self.max_chars) & ~scores["rejected_pattern"])

    def choose(self, scores: dict[str, np.ndarray], k: int) -> np.ndarray:
        ok = self.quality(scores)
        if not len(ok):
            return ok
        x = torch.from_numpy(scores["embedding"][ok]).to(self.device())
        return ok[k_center_greedy(x, k, seed=self.kcenter_seed).numpy()]

    def cut(self, scores: dict[str, np.ndarray], selected: np.ndarray) -> tuple[str, float | None]:
        return "response_chars", float(self.min_chars)
