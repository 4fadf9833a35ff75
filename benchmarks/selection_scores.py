"""What a selection strategy's scores see in the real-model study's noisy pool: the mean of every score column of a
run's ``selection.csv`` per noise kind of the pool's rows (the pool's ``noise`` column: none, wrong, off_task,
garbled, truncated), and each kind's share of the kept rows. A scorer that sees the noise ranks the clean rows apart.

    python benchmarks/selection_scores.py runs/lab/selection/deita/seed0     # any folder holding selection.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.prepare import tasks  # noqa: E402  (the study's pool, read from its configs)

POOL = (["configs/selection/random.yaml", "configs/real/selection.yaml"], "data.init_args.pool.init_args.train")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder (searched for selection/selection.csv)")
    a = p.parse_args()
    reports = sorted(a.run.rglob("selection/selection.csv"))
    if not reports:
        sys.exit(f"{a.run} holds no selection/selection.csv")
    scores = pd.read_csv(reports[-1])
    pool = pd.DataFrame(tasks(*POOL))
    scores["noise"] = pool["noise"].to_numpy()[scores["index"]]
    columns = [c for c in scores.columns if c not in ("index", "selected", "noise")]
    table = scores.groupby("noise")[columns].mean()
    table["rows"] = scores.groupby("noise").size()
    table["kept"] = scores.groupby("noise")["selected"].sum()
    print(f"{reports[-1]}\n{table.round(3).to_string()}")


if __name__ == "__main__":
    main()
