"""Effect runs on the real model (issue 16): each method and its matched control through the real CLI, per seed,
resumable across sessions. A run's outputs land in ``runs/effects/<study>/<arm>/seed<S>/`` (its
``--trainer.default_root_dir``); its before -> after validation metrics in ``result.json`` there. The summary (per
seed, mean and spread, and every run's record) is printed and written to ``benchmarks/results/effects/<study>.json``
(committed); it holds the seeds asked for and every seed it already recorded. A finished run (its ``result.json`` or
its record in that summary) is never repeated; ``--summary`` rewrites the summary alone; ``--arms`` lets two processes
share a study.

    python benchmarks/real_effects.py orpo --seeds 0 1 2          # ORPO vs SFT on the chosen answers (beta 0)

Studies (the protocol of each is in benchmarks/RESULTS.md, written before its runs). Each arm runs the method config,
configs/models/smollm2.yaml and the study's recipe fragment configs/real/<study>.yaml (whose header shows every arm's
command), plus one flag for the control:
  orpo: 60 steps of 8 pairs; control beta 0 (the loss is then exactly the NLL on the chosen sequences: SFT on chosen).
  dpo_family: DPO (live reference: the LoRA-disabled model) and SimPO with ORPO's fragment; `orpo` is their comparison.
  cft: CFT (critiques of candidate solutions, half of them wrong) vs SFT on the same 480 questions' correct solutions.
  cut: 60 steps of 8 judgment rows (half negative); control alpha 0 (no unlikelihood on flagged tokens, else as CUT).
  coin: 60 steps of 8 pairs whose paraphrases come from 2 of the 3 phrasings; evaluated on 50 problems x 4
        phrasings (one never trained on); control contrastive weight 0 (SFT on the same pairs, both versions).
  ttrl: at test time (trains on the 200 evaluation prompts, labels unused), 25 steps of 4 prompts x 8 votes;
        controls: placebo (pseudo-rewards shuffled within each group) and GRPO with the true reward (upper bound).
  rlsc: add/compare/mul/sub at difficulty 1, 20 steps of 2 prompts x 16 samples; control placebo (each completion
        weighted by another sample's confidence).
  rlaif: per seed, `reward_model` (the instruct model labels 800 training pairs, both orders; a LoRA reward model
        fits the soft labels; its held-out pairs carry the true label), `rlaif` (GRPO update on that reward model)
        and the control `grpo_verifier` (the same RL on the verifier reward); the labeler's accuracy against the
        true labels (response_a is always the correct answer) is read from its labels file.
  selection (issue 17): IFD, Cherry (pre-experienced IFD), Superfiltering (an 8-layer cut of the real model scores),
        DEITA, MoDS (the instruct model judges), LESS (count-sketch projection) and LIMA keep 400 of a 2,000-row
        noisy pool (configs/real/selection.yaml after each strategy's config), vs a random 400 and the full pool;
        each run's record holds the kept set's noise kinds, duplicates and scoring cost.
  scaling (issue 17): `ltune scaling` with configs/real/scaling.yaml: nested random subsets of 50 to 1,600 clean
        rows, 100 steps each, held-out exact match per category after each budget.
  lion (issue 17): configs/loops/lion_smollm2.yaml (student: the instruct model; teacher and referee: the quickstart's
        LoRA SFT export, made once by the driver); control: imitation alone on as many instructions as Lion ended with.
  rest_em: configs/loops/rest_em_smollm2.yaml (2 rounds from the instruct model; per-round figures in the record);
        control: SFT on the reference solutions of the prompts its last round kept, one row per kept row, 2 epochs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOL = "configs/models/smollm2.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}


def recipe(objective: str, real: str) -> list[str]:
    """The configs of a study arm: the method config, the real-model fragment, the study's recipe fragment."""
    return [f"configs/objectives/{objective}.yaml", SMOL, f"configs/real/{real}.yaml"]


STUDIES = {
    "orpo": {
        "config": recipe("orpo", "orpo"),
        "arms": {"orpo": [], "sft_chosen": ["--model.init_args.beta=0"]},
        "metrics": ["val/exact_match", "val/rewards/accuracies"],
    },
    "dpo_family": {  # the same fragment as ORPO's study, whose two arms are the comparison
        "config": [],
        "arms": {"dpo": recipe("dpo", "orpo"), "simpo": recipe("simpo", "orpo")},
        "metrics": ["val/exact_match", "val/rewards/accuracies"],
    },
    "rlsc": {
        "config": recipe("rlsc", "rlsc"),
        "arms": {"rlsc": [], "placebo": ["--model.init_args.placebo=true"]},
        "metrics": ["val/exact_match"],
    },
    "cft": {
        "config": [],
        "arms": {"cft": recipe("cft", "cft"), "sft": [*recipe("sft", "cft"), "--data.init_args.val=null"]},
        "metrics": ["val/exact_match"],
    },
    "cut": {
        "config": recipe("cut", "cut"),
        "arms": {"cut": [], "mle": ["--model.init_args.alpha=0"]},
        "metrics": ["val/exact_match", "val/misalign_loss", "val/mle_loss"],
    },
    "coin": {
        "config": recipe("coin", "coin"),
        "arms": {"coin": [], "sft_pairs": ["--model.init_args.contrastive_weight=0"]},
        "metrics": ["val/exact_match", *(f"val/exact_match/phrasing{k}" for k in range(4)), "val/retrieval_acc"],
    },
    "ttrl": {  # test-time protocol: trains on the (unlabelled) evaluation prompts themselves
        "config": recipe("ttrl", "ttrl"),
        "arms": {
            "ttrl": [],
            "placebo": ["--model.init_args.placebo=true"],
            "grpo_true": ["--model=ltune.GRPO"],  # the verifier reward on the true answers: the upper bound
        },
        "metrics": ["val/exact_match"],
    },
}
ROOM = ["add", "compare", "mul", "sub"]  # where the instruct model has majority-vote headroom (RESULTS, issue 14)
ROOM_PROMPTS = f"{{format: prompts, n: 200, split: val, categories: [{', '.join(ROOM)}], difficulties: [1]}}"


def reference_rows(seed: int, out: Path) -> list[str]:
    """The ReST-EM control of a seed: SFT on the reference solutions of the very prompts that seed's last round kept
    (one row per kept row: same prompts, same count, same epochs), written to ``out/train.jsonl``."""
    from ltune.datamodules import EmbeddedTasks

    rounds = sorted((ROOT / "runs/effects/rest_em/rest_em" / f"seed{seed}").rglob("round_*/train.jsonl"))
    if not rounds:
        sys.exit(f"rest_em/rest_em/seed{seed} has no round data yet: run that arm first")
    kept = [json.loads(line) for line in rounds[-1].read_text().splitlines() if line.strip()]
    problems = EmbeddedTasks(format="instruction", n=120, split="train", seed=seed, categories=ROOM,
                             difficulties=[1]).rows()  # fmt: skip
    reference = {r["prompt"]: r for r in problems}
    out.mkdir(parents=True, exist_ok=True)
    rows = [reference[k["prompt"]] for k in kept]
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["configs/objectives/sft.yaml", SMOL,
            f"--data.init_args.train={out / 'train.jsonl'}", "--data.init_args.val=null",
            f"--data.init_args.eval_prompts={{class_path: ltune.datamodules.EmbeddedTasks, init_args: {ROOM_PROMPTS}}}",
            "--data.init_args.batch_size=8", "--trainer.max_steps=-1", "--trainer.max_epochs=2",
            "--trainer.val_check_interval=1.0", "--trainer.check_val_every_n_epoch=2",
            "--model.init_args.max_new_tokens=48"]  # fmt: skip


STUDIES["rest_em"] = {
    "config": [],
    "arms": {"rest_em": ["configs/loops/rest_em_smollm2.yaml"], "sft_reference": reference_rows},
    "metrics": ["val/exact_match"],
}
RLAIF_VAL = ROOT / "runs/effects/rlaif/val_pairs.jsonl"


def rlaif_val_pairs() -> None:
    """200 held-out preference pairs (fixed seed 0, the RL arms' four categories, difficulty 1) with their true label
    (preference 1: ``chosen`` is the correct answer), so the reward model's ``val/accuracy`` is against the truth."""
    from ltune.datamodules import EmbeddedTasks

    RLAIF_VAL.parent.mkdir(parents=True, exist_ok=True)
    rows = EmbeddedTasks(format="preference", n=200, split="val", seed=0, categories=ROOM, difficulties=[1]).rows()
    RLAIF_VAL.write_text("".join(json.dumps({**r, "preference": 1.0}) + "\n" for r in rows))


def reward_model_args(seed: int, out: Path) -> list[str]:
    return [*recipe("rlaif_reward_model", "rlaif_reward_model"), f"--data.init_args.val={RLAIF_VAL}",
            f"--data.init_args.labels_path={out / 'labels/train.jsonl'}"]  # fmt: skip


def rlaif_args(seed: int, out: Path) -> list[str]:
    ckpts = sorted((ROOT / "runs/effects/rlaif/reward_model" / f"seed{seed}").rglob("last.ckpt"))
    if not ckpts:
        sys.exit(f"rlaif/reward_model/seed{seed} has no checkpoint yet: run that arm first")
    return [*recipe("rlaif", "rlaif"), f"--model.init_args.reward_model={ckpts[-1]}"]


def labeler_accuracy(out: Path) -> dict:
    """The AI labeler against the true labels: response_a is the correct answer of every pair, so a soft label > 0.5
    is a right judgment; per category too."""
    rows = [json.loads(line) for f in out.rglob("labels/train.jsonl") for line in f.read_text().splitlines() if line]
    if not rows:
        return {}
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r.get("category", "all"), []).append(r["preference"])
    acc = {c: sum(p > 0.5 for p in ps) / len(ps) for c, ps in sorted(by.items())}
    # the judge's position bias and label entropy, when the labeling run wrote them (since 2026-12-01, session 12)
    judge = {k: v for f in out.rglob("labels/train.metrics.json") for k, v in json.loads(f.read_text()).items()}
    return {"pairs": len(rows), "accuracy": sum(r["preference"] > 0.5 for r in rows) / len(rows),
            "mean_label": statistics.mean(r["preference"] for r in rows), "accuracy_by_category": acc,
            "judge": judge}  # fmt: skip


STUDIES["rlaif"] = {
    "prepare": rlaif_val_pairs,
    "config": [],
    "arms": {
        "reward_model": reward_model_args,
        "rlaif": rlaif_args,
        "grpo_verifier": [*recipe("rlaif", "rlaif"), "--model=ltune.GRPO"],
    },
    "metrics": ["val/exact_match", "val/accuracy"],
    "extra": {"reward_model": labeler_accuracy},
}
SELECTION = ROOT / "runs/effects/selection"
SMALL_SCORER = SELECTION / "smollm2-135m-instruct-8layers"
POOL = {"format": "pool", "split": "train",  # the strategies' pool; its sizes and noise from the study's recipe
        **yaml.safe_load((ROOT / "configs/real/selection.yaml").read_text())["data"]["init_args"]["pool"]["init_args"]
        ["train"]["init_args"]}  # fmt: skip


def small_scorer() -> None:
    """Superfiltering's small scorer: the real model cut to its first 8 of 30 layers (no smaller pretrained LM with its
    tokenizer is available offline), saved once as a Hugging Face folder."""
    if (SMALL_SCORER / "config.json").is_file():
        return
    from ltune.backbone import Backbone

    backbone = Backbone("smollm2-135m-instruct")
    model = backbone.load_frozen()
    model.model.layers = model.model.layers[:8]
    model.config.num_hidden_layers = 8
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:8]
    model.save_pretrained(SMALL_SCORER)
    backbone.tokenizer.save_pretrained(SMALL_SCORER)


def strategy(name: str, *flags: str, budget: str = "400") -> list[str]:
    """A selection arm: the strategy's config, the model fragment, the study's fragment, its budget and shared cache."""
    return [f"configs/selection/{name}.yaml", SMOL, "configs/real/selection.yaml", f"--data.init_args.budget={budget}",
            f"--data.init_args.cache_dir={SELECTION / 'cache'}", *flags]  # fmt: skip


def less_args(seed: int, out: Path) -> list[str]:
    warm = sorted((SELECTION / "less_warmup" / f"seed{seed}").rglob("less/epoch_*.pt"))
    if not warm:  # recorded in an earlier session, whose machine kept the checkpoints: warm up again
        run("selection", "less_warmup", seed, reuse=False)
        warm = sorted((SELECTION / "less_warmup" / f"seed{seed}").rglob("less/epoch_*.pt"))
    return strategy(
        "less", f"--data.init_args.checkpoints={warm[0].parent}", "--data.init_args.projection=count_sketch"
    )


def target_pool() -> list[dict]:
    """The pool's rows of LESS's target categories (add, sub, mul: 557 of the 2,000), in the pool's order."""
    from ltune.datamodules import EmbeddedTasks

    return [r for r in EmbeddedTasks(**POOL).rows() if r["category"] in ("add", "sub", "mul")]


def random_target_args(seed: int, out: Path) -> list[str]:
    """LESS's category control: a random 400 of the pool's add/sub/mul rows (LESS's category mix, the rows within it
    drawn at random), written to a JSONL pool (atomically: two processes may write it at once)."""
    from ltune.io import atomic_write_jsonl

    path = atomic_write_jsonl(SELECTION / "target_categories.jsonl", target_pool())
    return strategy("random", f"--data.init_args.pool.init_args.train={path}", f"--data.init_args.seed={seed}")


def kept_rows(out: Path, pool: list[dict] | None = None) -> dict:
    """What a strategy trained on last: rows, noise kinds, duplicates (matched to the pool's diagnostics), and the
    scoring cost of each selection (``selection/scoring.json``). Round-based strategies (Cherry, MoDS): the last
    round's ``train.jsonl``; the others: their ``selection.csv`` (indices into ``pool``, by default the study's)."""
    import pandas as pd

    from ltune.datamodules import EmbeddedTasks

    pool = EmbeddedTasks(**POOL).rows() if pool is None else pool
    rounds = sorted(out.rglob("rounds/round_*/train.jsonl"))
    reports = sorted(out.rglob("selection/selection.csv"))
    if rounds:
        unused: dict[tuple, list[dict]] = {}
        for r in pool:
            unused.setdefault((r["prompt"], r["response"]), []).append(r)
        rows = [json.loads(line) for line in rounds[-1].read_text().splitlines() if line.strip()]
        kept = [unused[(r["prompt"], r["response"])].pop(0) for r in rows]
    elif reports:
        kept = [pool[i] for i in pd.read_csv(reports[-1]).query("selected")["index"]]
    else:
        return {}
    kinds: dict[str, int] = {}
    for r in kept:
        kinds[r["noise"]] = kinds.get(r["noise"], 0) + 1
    cost = [json.loads(f.read_text()) for f in sorted(out.rglob("selection/scoring.json"))]
    return {"kept": len(kept), "noisy_share": sum(r["quality"] == "noisy" for r in kept) / max(len(kept), 1),
            "noise_kinds": kinds, "duplicates": sum(r["duplicate"] for r in kept), "scoring": cost}  # fmt: skip


STUDIES["selection"] = {
    "prepare": small_scorer,
    "config": [],
    "arms": {
        "random": lambda seed, out: strategy("random", f"--data.init_args.seed={seed}"),
        "ifd": strategy("ifd"),
        "superfiltering": strategy("superfiltering", f"--data.init_args.scorer.name_or_path={SMALL_SCORER}"),
        "deita": strategy("deita"),
        "lima": strategy("random", "--data=ltune.datamodules.LIMA", "--data.init_args.min_chars=20"),
        "cherry": strategy(
            "cherry",
            "--data.init_args.clusters=10",
            "--data.init_args.per_cluster=10",
            "--trainer.callbacks.init_args.budget=400",
            "--trainer.callbacks.init_args.epochs_per_round=2",
            budget="1.0",
        ),  # the pre-experience rows: 10 per cluster; the IFD round keeps 400
        "mods": strategy(
            "mods",
            "--data.init_args.augment_size=200",
            "--trainer.callbacks.init_args.epochs_per_round=2",
            "--data.init_args.reward={class_path: ltune.judges.LMJudge, init_args: {backbone: null}}",
            budget="200",
        ),  # 200 seed rows + at most 200 necessary ones; the instruct model judges
        "less_warmup": strategy("less_warmup", "--trainer.max_epochs=4", "--validate_around_fit=false", budget="0.05"),
        "less": less_args,  # the warm-up's 4 checkpoints; a count-sketch projection (the dense one is 80 GFLOP a row)
        "random_target": random_target_args,  # LESS's category mix without its choice (added after LESS's results)
        "full": strategy("random", "--trainer.max_epochs=1", budget="1.0"),
    },
    "metrics": ["val/exact_match"],
    "extra": {
        **{
            arm: kept_rows
            for arm in ("random", "ifd", "superfiltering", "deita", "lima", "cherry", "mods", "less", "full")
        },
        "random_target": lambda out: kept_rows(out, target_pool()),
    },
}
STUDIES["scaling"] = {
    "verb": "scaling",
    "config": ["configs/selection/scaling.yaml", SMOL, "configs/real/scaling.yaml"],
    "arms": {"sft": lambda seed, out: ["--budgets=50,100,200,400,800,1600", f"--output={out / 'scaling'}"]},
    "metrics": [],
}
LION = ROOT / "runs/effects/lion"
LION_TEACHER = LION / "teacher/runs/quickstart_smollm2/version_0/hf"


def lion_teacher() -> None:
    """Lion's teacher and referee: the quickstart's LoRA SFT of the instruct model (seed 0), exported merged."""
    if (LION_TEACHER / "config.json").is_file():
        return
    cmd = ["ltune", "fit", "--config", "configs/quickstart_smollm2.yaml",
           f"--trainer.default_root_dir={LION / 'teacher'}", "--trainer.enable_progress_bar=false"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, env=ENV, check=True, capture_output=True)


def lion_control(seed: int, out: Path) -> list[str]:
    """Imitation alone (round 0 only) on as many original instructions as the seed's Lion run ended with."""
    rounds = sorted((LION / "lion" / f"seed{seed}").rglob("rounds/rounds.json"))
    if not rounds:
        sys.exit(f"lion/lion/seed{seed} has no rounds.json yet: run that arm first")
    pool = int(max(h.get("train_pool", 0) for h in json.loads(rounds[-1].read_text())))
    return [*lion_args(seed, out), "--trainer.callbacks.init_args.rounds=1",
            f"--trainer.callbacks.init_args.instructions.init_args.n={pool}"]  # fmt: skip


def lion_args(seed: int, out: Path) -> list[str]:
    return ["configs/loops/lion_smollm2.yaml",
            f"--trainer.callbacks.init_args.teacher.init_args.backbone.name_or_path={LION_TEACHER}"]  # fmt: skip


STUDIES["lion"] = {
    "prepare": lion_teacher,
    "config": [],
    "arms": {"lion": lion_args, "imitation": lion_control},
    "metrics": ["val/exact_match"],
}
LINE = re.compile(r"^\s+(\S+)\s+(-?[\d.]+|nan)\s+->\s+(-?[\d.]+|nan)$")


def finished(study: str, arm: str, seed: int) -> dict | None:
    """A finished run's record: its ``result.json``, else the one in the study's committed summary (run folders are
    not committed, so a later session on a fresh machine reuses the record instead of repeating the run)."""
    result = ROOT / "runs/effects" / study / arm / f"seed{seed}" / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    summary = ROOT / "benchmarks/results/effects" / f"{study}.json"
    records = json.loads(summary.read_text())["runs"] if summary.is_file() else []
    return next((r for r in records if r["arm"] == arm and r["seed"] == seed), None)


def run(study: str, arm: str, seed: int, reuse: bool = True) -> dict:
    """Run one arm of a study for one seed through the CLI and record it; a finished run is reused unless not
    ``reuse``."""
    spec, out = STUDIES[study], ROOT / "runs/effects" / study / arm / f"seed{seed}"
    result = out / "result.json"
    if reuse and (record := finished(study, arm, seed)):
        return record
    out.mkdir(parents=True, exist_ok=True)
    arm_args = spec["arms"][arm]
    arm_args = arm_args(seed, out) if callable(arm_args) else arm_args  # built from an earlier arm's outputs
    arm_configs = [a for a in arm_args if not a.startswith("--")]  # config paths; the rest are flags
    arm_flags = [a for a in arm_args if a.startswith("--")]
    configs = [a for c in (*spec["config"], *arm_configs) for a in ("--config", c)]
    cmd = ["ltune", spec.get("verb", "fit"), *configs, f"--seed_everything={seed}", "--validate_around_fit=true",
           f"--trainer.default_root_dir={out}", "--trainer.enable_progress_bar=false", *arm_flags]  # fmt: skip
    print(" ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    (out / "stdout.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"{study}/{arm}/seed{seed} failed; see {out / 'stdout.txt'}")
    moved = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in map(LINE.match, proc.stdout.splitlines()) if m}
    record = {"study": study, "arm": arm, "seed": seed, "command": cmd, "before_after": moved}
    if arm in spec.get("extra", {}):  # figures a study reads from the run's files
        record["extra"] = spec["extra"][arm](out)
    for path in out.rglob("scaling.csv"):  # `ltune scaling`: held-out exact match per budget and category
        record["scaling"] = list(csv.DictReader(path.open()))
    for path in out.rglob("rounds/rounds.json"):  # rounds callbacks: every round's figures
        record["rounds"] = json.loads(path.read_text())
    result.write_text(json.dumps(record, indent=1))
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=sorted(STUDIES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--summary", action="store_true", help="write the summary of the finished runs; run nothing")
    p.add_argument("--arms", nargs="+", help="run only these arms (two processes can share a study's arms); the "
                   "summary still holds every finished arm of the seeds")  # fmt: skip
    a = p.parse_args()
    spec = STUDIES[a.study]
    if unknown := set(a.arms or []) - set(spec["arms"]):
        sys.exit(f"{a.study} has no arm(s) {sorted(unknown)}; its arms: {', '.join(spec['arms'])}")
    if "prepare" in spec and not a.summary:
        spec["prepare"]()
    for seed in [] if a.summary else a.seeds:  # seed-major: an interrupted study has both arms of its first seeds
        for arm in a.arms or spec["arms"]:
            run(a.study, arm, seed)
    out = ROOT / "benchmarks/results/effects" / f"{a.study}.json"
    recorded = {r["seed"] for r in json.loads(out.read_text())["runs"]} if out.is_file() else set()
    wanted = sorted(recorded | set(a.seeds))  # a run over some seeds keeps the other seeds' records
    records = list(filter(None, (finished(a.study, arm, seed) for seed in wanted for arm in spec["arms"])))
    summary = {}
    for metric in spec["metrics"]:
        for arm in spec["arms"]:
            pairs = [r["before_after"].get(metric) for r in records if r["arm"] == arm]
            ends = [end for _, end in filter(None, pairs)]
            summary[f"{arm} {metric}"] = {
                "start": [start for start, _ in filter(None, pairs)],
                "end": ends,
                "mean": statistics.mean(ends) if ends else None,
                "sd": statistics.stdev(ends) if len(ends) > 1 else None,
            }
            print(f"{arm:12s} {metric:26s} start {pairs[0][0] if pairs and pairs[0] else float('nan'):.3f} "
                  f"end per seed {', '.join(f'{e:.3f}' for e in ends)}")  # fmt: skip
    for arm in spec["arms"]:  # selection studies: the kept sets' composition and the scoring cost (seed-major)
        kept = [r["extra"] for r in records if r["arm"] == arm and "noisy_share" in r.get("extra", {})]
        if kept:
            # a run that read its scores from the cache has no rate (older records: under a second)
            cost = [c["rows_per_s"] for e in kept for c in e["scoring"] if c.get("scored", c["seconds"] >= 1)]
            shares = [e["noisy_share"] for e in kept]
            summary[f"{arm} kept"] = {"noisy_share": shares, "duplicates": [e["duplicates"] for e in kept],
                                      "scoring_rows_per_s": cost}  # fmt: skip
            print(f"{arm:12s} noisy share per seed {', '.join(f'{s:.3f}' for s in shares)}; "
                  f"scoring rows/s {', '.join(f'{c:.1f}' for c in cost) or 'none (cached or no scorer)'}")  # fmt: skip
    for arm in spec["arms"]:  # scaling studies: mean and spread per (rows, category) over the seeds
        points: dict[str, list[float]] = {}
        for r in (r for r in records if r["arm"] == arm):
            for row in r.get("scaling", []):
                points.setdefault(f"{row['rows']} {row['category']}", []).append(float(row["exact_match"]))
        for key, values in points.items():
            summary[f"{arm} scaling {key}"] = {"per_seed": values, "mean": statistics.mean(values),
                                               "sd": statistics.stdev(values) if len(values) > 1 else None}  # fmt: skip
            print(f"{arm:12s} rows/category {key:18s} exact match per seed {', '.join(f'{v:.3f}' for v in values)}")
        if points:  # the curves of the seeds' means: benchmarks/results/effects/<study>/scaling.{csv,png}
            from ltune.datamodules.selection.report import write_scaling_report

            means = [{"rows": int(key.split()[0]), "category": key.split()[1], "exact_match": statistics.mean(v),
                      "seeds": len(v)} for key, v in points.items()]  # fmt: skip
            write_scaling_report(means, ROOT / "benchmarks/results/effects" / a.study)
    out.parent.mkdir(parents=True, exist_ok=True)
    seeds = sorted({r["seed"] for r in records})  # those with a finished run
    out.write_text(json.dumps({"seeds": seeds, "summary": summary, "runs": records}, indent=1))


if __name__ == "__main__":
    main()
