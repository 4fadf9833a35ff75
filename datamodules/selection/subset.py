"""Random seeded subsets, nested across budgets: the baseline of every selection strategy and the data axis of the
instruction-data scaling study (Ji et al., 2023, "Exploring the Impact of Instruction Data Scaling on Large
Language Models", BELLE: 0.2M ⊂ 0.6M ⊂ 1M ⊂ 2M drawn with one seed).
"""

from __future__ import annotations

from pathlib import Path
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
        report_dir: Folder of the selection report (see :class:`Selection`).
        progress: Unused (nothing to score); kept for a uniform signature.
    """

    cached = False  # a permutation is free to recompute

    def __init__(
        self,
        pool: LTuneData,
        budget: int | float = 0.1,
        seed: int = 0,
        report_dir: str | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(pool, budget, report_dir=report_dir, progress=progress)
        self.subset_seed = seed

    def scorer_config(self) -> dict[str, Any]:
        return {**super().scorer_config(), "seed": self.subset_seed}

    def score(self, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
        raise AssertionError("Subset draws from its permutation; see _score_sharded")

    def _score_sharded(self, rows: list[dict]) -> dict[str, np.ndarray]:
        perm = np.random.default_rng(self.subset_seed).permutation(len(rows))
        rank = np.empty(len(rows), dtype=np.int64)
        rank[perm] = np.arange(len(rows))
        return {"draw_order": rank}

    def choose(self, scores: dict[str, np.ndarray], k: int) -> np.ndarray:
        return np.argsort(scores["draw_order"], kind="stable")[:k]

    def cut(self, scores: dict[str, np.ndarray], selected: np.ndarray) -> tuple[str, float | None]:
        return "draw_order", float(len(selected)) - 0.5


def write_scaling_report(records: list[dict], out_dir: str | Path, metric: str = "exact_match") -> tuple[Path, Path]:
    """Write ``scaling.csv`` (budget, rows, category, metric) and ``scaling.png`` (metric vs rows, one line per
    category, log-scaled x axis) for the instruction-data scaling study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(records).sort_values(["category", "rows"])
    csv = out / "scaling.csv"
    df.to_csv(csv, index=False)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for cat, part in df.groupby("category"):
        ax.plot(part["rows"], part[metric], marker="o", label=cat, linewidth=2.5 if cat == "all" else 1.2)
    ax.set_xscale("log")
    ax.set_xlabel("training rows (nested random subsets)")
    ax.set_ylabel(metric)
    ax.set_title("instruction-data scaling")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    png = out / "scaling.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return csv, png
