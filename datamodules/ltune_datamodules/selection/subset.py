"""Random seeded subsets, nested across budgets: the baseline of every selection strategy and the data axis of the
instruction-data scaling study (Ji et al., 2023, "Exploring the Impact of Instruction Data Scaling on Large
Language Models", BELLE: 0.2M ⊂ 0.6M ⊂ 1M ⊂ 2M drawn with one seed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ltune.datamodules.base import LTuneData
from ltune.datamodules.selection.base import Selection


class Subset(Selection):
    """A random subset of the pool: one seeded permutation of the rows, of which the first ``budget`` are kept.

    Every budget takes a prefix of the same permutation, so with one seed the subsets are nested
    (0.1 ⊂ 0.2 ⊂ 0.5 ⊂ 1.0). The permutation depends only on ``seed`` and the pool size.

    Args:
        pool: The candidate pool DataModule (any format).
        budget: Rows to keep: an int is a count, a float in (0, 1] a fraction of the pool.
        seed: Seed of the permutation.
        **kwargs: :class:`Selection`'s ``cache_dir``, ``report_dir``, ``score_batch_size``, ``progress``.
    """

    cached = False  # a permutation is free to recompute
    sharded = False  # the permutation needs the whole pool: every rank draws it (identically) instead of a shard

    def __init__(
        self,
        pool: LTuneData,
        budget: int | float = 0.1,
        seed: int = 0,
        **kwargs,
    ) -> None:
        kwargs.setdefault("progress", False)  # nothing to score
        super().__init__(pool, budget, **kwargs)
        self.subset_seed = seed

    def scorer_config(self) -> dict[str, Any]:
        return {**super().scorer_config(), "seed": self.subset_seed}

    def score(self, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
        perm = np.random.default_rng(self.subset_seed).permutation(len(rows))
        rank = np.empty(len(rows), dtype=np.int64)
        rank[perm] = np.arange(len(rows))
        return {"draw_order": rank}

    def choose(self, scores: dict[str, np.ndarray], k: int) -> np.ndarray:
        return np.argsort(scores["draw_order"], kind="stable")[:k]

    def cut(self, scores: dict[str, np.ndarray], selected: np.ndarray) -> tuple[str, float | None]:
        return "draw_order", float(len(selected)) - 0.5
