"""Where IFD puts the embedded pool's noisy rows (notebook figures: the hand-written RESULTS.md of commit
07c8cc9): the mean IFD of clean and noisy rows, the share that IFD >= 1 drops, and the noisy share of the top
fraction that Cherry keeps.

    python benchmarks/ifd_noise.py --scorer runs/quickstart/version_0/hf          # the selection-effect pool (20k)
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from ltune.backbone import Backbone
from ltune.datamodules import IFD, EmbeddedTasks, InstructionData


def ifd_by_quality(scorer: str, n: int, fractions: list[float]) -> dict:
    source = EmbeddedTasks(format="pool", n=n, split="train", difficulties=[1])
    rows = source.rows()
    pool = InstructionData(train=source, max_length=128)
    ifd = IFD(pool=pool, scorer=Backbone(name_or_path=scorer), progress=False, score_batch_size=32)
    s = ifd.score(rows, [ifd.row_name(i) for i in range(len(rows))])
    noisy = np.array([r["quality"] == "noisy" for r in rows])
    scored = ~s["skipped"]
    out: dict = {"rows": len(rows), "pool_noisy_share": float(noisy.mean())}
    for label, mask in (("clean", ~noisy), ("noisy", noisy)):
        m = mask & scored
        out[label] = {
            "ifd_mean": float(s["ifd"][m].mean()),
            "ifd_median": float(np.median(s["ifd"][m])),
            "dropped_ifd_ge_1": float((s["ifd"][m] >= 1).mean()),
            "loss_cond": float(s["loss_cond"][m].mean()),
            "loss_direct": float(s["loss_direct"][m].mean()),
        }
    for frac in fractions:  # the rows Cherry's choose() keeps at this budget
        kept = ifd.choose(s, round(frac * len(rows)))
        out[f"noisy_share_top_{frac}"] = float(noisy[kept].mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scorer", required=True, help="a trained export folder (the selection-effect scorer)")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5])
    args = ap.parse_args()
    print(json.dumps(ifd_by_quality(args.scorer, args.n, args.fractions), indent=1))


if __name__ == "__main__":
    main()
