"""Selection reports: ``selection.csv`` (index, 1-D scores, kept), ``selection.png`` (score histogram with the cut),
W&B logging of both, and the scaling study's ``scaling.csv`` / ``scaling.png``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def write_selection_report(
    out: Path,
    scores: dict[str, np.ndarray],
    selected: np.ndarray,
    n: int,
    cut: tuple,
    title: str,
    skipped_key: str,
    loggers: list = (),
) -> tuple[Path, Path]:
    """Write ``selection.csv`` and ``selection.png`` into ``out`` and log both to any W&B logger in ``loggers``.

    Args:
        out: Folder of the report.
        scores: The strategy's score arrays (1-D ones become columns; ``skipped_key`` marks rows skipped by policy).
        selected: Indices of the kept rows.
        n: Rows in the pool.
        cut: ``(score name, threshold or None)`` drawn in the histogram.
        title: The strategy's name.
        skipped_key: Name of the boolean array of rows skipped by the strategy's documented policy.
        loggers: The trainer's loggers (W&B ones get a table and the image).
    """
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(n, dtype=bool)
    mask[selected] = True
    table = {"index": np.arange(n)}
    table.update({k: v for k, v in scores.items() if v.ndim == 1})
    table["selected"] = mask
    df = pd.DataFrame(table)
    csv = out / "selection.csv"
    df.to_csv(csv, index=False)
    png = out / "selection.png"
    name, threshold = cut
    _histogram(scores[name], mask, scores.get(skipped_key), name, threshold, png, title)
    skipped = int(scores[skipped_key].sum()) if skipped_key in scores else 0
    log.info("%s: kept %d of %d rows (%d skipped by policy); report in %s", title, len(selected), n, skipped, out)
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table("selection/scores", dataframe=df)
            logger.log_image("selection/histogram", images=[str(png)])
    return csv, png


def _histogram(values, mask, skipped, name: str, threshold, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = np.isfinite(values) & (~skipped if skipped is not None else True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.histogram_bin_edges(values[ok], bins=40) if ok.any() else 10
    ax.hist([values[ok & mask], values[ok & ~mask]], bins=bins, stacked=True, label=["selected", "not selected"])
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"cut {threshold:.4g}")
    ax.set_xlabel(name)
    ax.set_ylabel("rows")
    ax.set_title(f"{title}: {int(mask.sum())} of {len(values)} rows kept")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
