"""Lion's effect on the embedded ``sum`` task: the data that teaches a tiny teacher to write instructions, and the
per-round summary of a run.

Lion needs a teacher that answers instructions *and* writes new ones from a seed (same task type and difficulty for a
hard seed, a rarer kind for an easy seed), and a referee that can tell a right answer from a wrong one. At tiny scale
the teacher is the sum SFT model fine-tuned on a mix of answers and instruction-writing rows (this file writes them),
and the referee is ``ltune.judges.VerifierJudge`` (answers checked against ``problems.solve``). Recipe and figures:
"Lion on the sum task" in the hand-written RESULTS.md of commit 07c8cc9 (a notebook study; the report
keeps the real-model one).

    python benchmarks/lion_effect.py teacher-data --out teacher.jsonl
    python benchmarks/lion_effect.py summary runs/lion/version_0
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from ltune.datamodules.tasks import generate_problems

LION_HARD = "Write a similar problem: {instruction}"  # the tiny teacher's short forms of Lion's hard/easy prompts
LION_EASY = "Write a rarer problem: {instruction}"


def lion_teacher_rows(n: int = 4000, seed: int = 0) -> list[dict]:
    """Rows that teach a small model to act as Lion's teacher on ``sum``: ``n`` answer rows (difficulties 1-2) and ``n``
    instruction-writing rows, half hard and half easy, shuffled (``teacher-data`` writes them).

    Hard: the response is another problem of the seed's difficulty. Easy ("rarer"): a problem of the other
    difficulty, phrased in one of the three less common phrasings. All from the train split.
    """
    rng = random.Random(seed)
    by_level = {d: generate_problems(n, seed, "train", ["sum"], [d]) for d in (1, 2)}
    answers = [p for d in (1, 2) for p in by_level[d][: n // 2]]
    rows = [{"prompt": p.question, "response": p.solution} for p in answers]
    pool = {d: by_level[d][n // 2 :] for d in (1, 2)}
    for i in range(n):
        seed_problem = answers[i % len(answers)]
        level, hard = seed_problem.difficulty, i % 2 == 0
        target = rng.choice(pool[level] if hard else pool[3 - level])
        response = target.question if hard else rng.choice(target.paraphrases)
        rows.append(
            {
                "prompt": (LION_HARD if hard else LION_EASY).format(instruction=seed_problem.question),
                "response": response,
            }
        )
    rng.shuffle(rows)
    return rows


def teacher_data(out: str, n: int = 4000, seed: int = 0) -> None:
    """Write :func:`lion_teacher_rows` as jsonl (the tiny teacher's training rows)."""
    rows = lion_teacher_rows(n, seed)
    Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} rows -> {out}")


def summary(run: str) -> None:
    """Per-round Lion figures of a run folder: ``rounds/rounds.json``, which the rounds callback writes (every
    ``round/*`` metric and the held-out ``val/*`` figures after each round's M-step)."""
    for r in json.loads((Path(run) / "rounds" / "rounds.json").read_text()):
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("teacher-data")
    t.add_argument("--out", required=True)
    t.add_argument("--n", type=int, default=4000)
    t.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("summary")
    s.add_argument("run")
    args = parser.parse_args()
    if args.cmd == "teacher-data":
        teacher_data(args.out, args.n, args.seed)
    else:
        summary(args.run)


if __name__ == "__main__":
    main()
