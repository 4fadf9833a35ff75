"""Does Lion's referee read the answers? It rates, in both orders, a correct worked answer against a wrong one of the
same format (``EmbeddedTasks`` preference pairs, held-out split) with Lion's referee prompt, and prints the mean
two-order score of each, how often the correct one leads by Lion's threshold (1.0: "hard" if it were the teacher's),
and the score of an answer paired with itself (identical teacher and student answers).

    python benchmarks/referee_check.py                                   # the instruct model as referee
    python benchmarks/referee_check.py --referee runs/quickstart_smollm2/version_0/hf --n 100

Lion's figures (RESULTS "Lion on the real model") average the two orders exactly so: a referee whose rating depends
only on the slot gives both answers the same score.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ltune.backbone import Backbone  # noqa: E402
from ltune.callbacks.lion import REFEREE_TEMPLATE  # noqa: E402
from ltune.datamodules import EmbeddedTasks  # noqa: E402
from ltune.judges import LMJudge  # noqa: E402


def two_order(judge: LMJudge, q: list[str], a: list[str], b: list[str]) -> tuple[list[float], list[float]]:
    """Lion's scores: a's rating in slot 1 and slot 2 averaged, and b's."""
    first = judge.rate_pair(q, a, b, REFEREE_TEMPLATE)
    second = judge.rate_pair(q, b, a, REFEREE_TEMPLATE)
    return [(x + y) / 2 for x, y in zip(first[0], second[1])], [(x + y) / 2 for x, y in zip(first[1], second[0])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--referee", default="smollm2-135m-instruct", help="model name or Hugging Face folder")
    p.add_argument("--n", type=int, default=100, help="held-out preference pairs (difficulty 1, seed 0)")
    p.add_argument("--threshold", type=float, default=1.0, help="Lion's hard-instruction margin")
    a = p.parse_args()
    rows = EmbeddedTasks(format="preference", split="val", n=a.n, difficulties=[1]).rows()
    judge = LMJudge(backbone=Backbone(a.referee))
    q, right, wrong = [r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows]
    s_right, s_wrong = two_order(judge, q, right, wrong)
    s_self, _ = two_order(judge, q, right, right)
    slot1, slot2 = judge.rate_pair(q, right, wrong, REFEREE_TEMPLATE)
    gaps = [x - y for x, y in zip(s_right, s_wrong)]
    report = {
        "referee": a.referee,
        "pairs": len(rows),
        "mean_score_correct": statistics.mean(s_right),
        "mean_score_wrong": statistics.mean(s_wrong),
        "mean_gap": statistics.mean(gaps),
        "sd_gap": statistics.stdev(gaps),
        "share_correct_ahead": sum(g > 0 for g in gaps) / len(gaps),
        "share_hard_at_threshold": sum(g >= a.threshold for g in gaps) / len(gaps),
        "mean_score_identical": statistics.mean(s_self),
        "mean_slot1_correct_first": statistics.mean(slot1),
        "mean_slot2_wrong_second": statistics.mean(slot2),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
