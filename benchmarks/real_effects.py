"""Effect runs on the real model (issue 16): each method and its matched control through the real CLI, per seed,
resumable across sessions. A run's outputs land in ``runs/effects/<study>/<arm>/seed<S>/`` (its
``--trainer.default_root_dir``); its before -> after validation metrics in ``result.json`` there; a finished run
(``result.json`` present) is never repeated. The summary (per seed, mean and spread) is printed and written to
``benchmarks/results/effects/<study>.json``.

    python benchmarks/real_effects.py orpo --seeds 0 1 2          # ORPO vs SFT on the chosen answers (beta 0)

Studies (the protocol of each is in benchmarks/RESULTS.md, written before its runs):
  orpo: configs/objectives/orpo.yaml + configs/models/smollm2.yaml, 60 steps of 8 pairs; control: the same run with
        beta 0 (the loss is then exactly the NLL on the chosen sequences: SFT on chosen, same data, steps, evaluation).
  dpo_family: DPO (configs/objectives/dpo.yaml, live reference: the LoRA-disabled model) and SimPO (simpo.yaml) with
        the same model fragment, data, steps and evaluation as `orpo`, whose two arms are their comparison.
  cft: CFT (configs/objectives/cft.yaml: critiques of candidate solutions, half of them wrong) vs SFT on the same
        480 questions' correct solutions (configs/objectives/sft.yaml), difficulty 1, 60 steps of 8 rows each.
  cut: configs/objectives/cut.yaml + smollm2.yaml, 60 steps of 8 judgment rows (half negative); control: the same run
        with alpha 0 (no unlikelihood term: MLE on Align-P and Align-N, the same rows and forwards).
  coin: configs/objectives/coin.yaml + smollm2.yaml (the paper's weight, 1000 with the rescale), 60 steps of 8 pairs
        whose paraphrases are drawn from 2 of the 3 phrasings; evaluated on 50 problems x 4 phrasings (one never
        trained on); control: contrastive weight 0 (SFT on the same pairs, both versions).
  ttrl: configs/objectives/ttrl.yaml + smollm2.yaml at test time (trains on the 200 evaluation prompts, labels
        unused), 25 steps of 4 prompts x 8 votes; controls: placebo (pseudo-rewards shuffled within each group) and
        GRPO with the verifier reward on the true answers (upper bound).
  rest_em: configs/loops/rest_em_smollm2.yaml (2 rounds from the instruct model; per-round figures in the record);
        control: SFT on the reference solutions of the prompts its last round kept, one row per kept row, 2 epochs.
  rlaif: per seed, stage 1+2 (`reward_model`: the instruct model labels 800 training pairs, both orders, and a LoRA
        reward model from it fits the soft labels; held-out pairs carry the true label), stage 3 (`rlaif`: GRPO update
        on that reward model) and the control `grpo_verifier` (the same RL on the verifier reward); the labeler's
        accuracy against the true labels (response_a is always the correct answer) is read from its labels file.
  rlsc: configs/objectives/rlsc.yaml + smollm2.yaml on the categories with majority-vote headroom (add, compare, mul,
        sub; difficulty 1), 20 steps of 2 prompts x 16 samples; control: the same run with `placebo=true` (each
        completion weighted by another sample's confidence).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["--trainer.max_steps=60", "--trainer.val_check_interval=60", "--data.init_args.batch_size=8"]
STUDIES = {
    "orpo": {
        "config": ["configs/objectives/orpo.yaml", "configs/models/smollm2.yaml"],
        "flags": SHORT,
        "arms": {"orpo": [], "sft_chosen": ["--model.init_args.beta=0"]},
        "metrics": ["val/exact_match", "val/rewards/accuracies"],
    },
    "dpo_family": {
        "config": ["configs/models/smollm2.yaml"],  # each arm puts its objective config first
        "flags": SHORT,
        "arms": {
            "dpo": ["--config", "configs/objectives/dpo.yaml"],
            "simpo": ["--config", "configs/objectives/simpo.yaml"],
        },
        "metrics": ["val/exact_match", "val/rewards/accuracies"],
    },
}
ROOM = "[add,compare,mul,sub]"  # where the instruct model has majority-vote headroom (RESULTS, issue 14)
STUDIES["rlsc"] = {
    "config": ["configs/objectives/rlsc.yaml", "configs/models/smollm2.yaml"],
    "flags": ["--trainer.max_steps=20", "--trainer.val_check_interval=20", "--data.init_args.batch_size=2",
              "--model.init_args.max_completion_length=48", "--model.init_args.max_new_tokens=48",
              *(f"--data.init_args.{s}.init_args.{k}={v}" for s in ("train", "val")
                for k, v in (("categories", ROOM), ("difficulties", "[1]")))],
    "arms": {"rlsc": [], "placebo": ["--model.init_args.placebo=true"]},
    "metrics": ["val/exact_match"],
}  # fmt: skip
D1 = "--data.init_args.{}.init_args.difficulties=[1]"
STUDIES["cft"] = {
    "config": ["configs/models/smollm2.yaml"],  # each arm puts its objective config first
    "flags": [*SHORT, "--data.init_args.train.init_args.n=480", D1.format("train"), D1.format("eval_prompts"),
              "--model.init_args.max_new_tokens=64"],
    "arms": {
        "cft": ["--config", "configs/objectives/cft.yaml"],
        "sft": ["--config", "configs/objectives/sft.yaml", "--data.init_args.val=null"],
    },
    "metrics": ["val/exact_match"],
}  # fmt: skip
STUDIES["cut"] = {
    "config": ["configs/objectives/cut.yaml", "configs/models/smollm2.yaml"],
    "flags": [*SHORT, "--data.init_args.train.init_args.n=480", "--model.init_args.max_new_tokens=64"],
    "arms": {"cut": [], "mle": ["--model.init_args.alpha=0"]},
    "metrics": ["val/exact_match", "val/misalign_loss", "val/mle_loss"],
}
ROOM1 = "{format: prompts, n: 200, split: val, categories: [add, compare, mul, sub], difficulties: [1]}"


def reference_rows(seed: int, out: Path) -> list[str]:
    """The ReST-EM control of a seed: SFT on the reference solutions of the very prompts that seed's last round kept
    (one row per kept row: same prompts, same count, same epochs), written to ``out/train.jsonl``."""
    from ltune.datamodules import EmbeddedTasks

    rounds = sorted((ROOT / "runs/effects/rest_em/rest_em" / f"seed{seed}").rglob("round_*/train.jsonl"))
    if not rounds:
        sys.exit(f"rest_em/rest_em/seed{seed} has no round data yet: run that arm first")
    kept = [json.loads(line) for line in rounds[-1].read_text().splitlines() if line.strip()]
    problems = EmbeddedTasks(format="instruction", n=120, split="train", seed=seed, categories=["add", "compare",
                             "mul", "sub"], difficulties=[1]).rows()  # fmt: skip
    reference = {r["prompt"]: r for r in problems}
    out.mkdir(parents=True, exist_ok=True)
    rows = [reference[k["prompt"]] for k in kept]
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["--config", "configs/objectives/sft.yaml", "--config", "configs/models/smollm2.yaml",
            f"--data.init_args.train={out / 'train.jsonl'}", "--data.init_args.val=null",
            f"--data.init_args.eval_prompts={{class_path: ltune.datamodules.EmbeddedTasks, init_args: {ROOM1}}}",
            "--data.init_args.batch_size=8", "--trainer.max_steps=-1", "--trainer.max_epochs=2",
            "--trainer.val_check_interval=1.0", "--trainer.check_val_every_n_epoch=2",
            "--model.init_args.max_new_tokens=48"]  # fmt: skip


STUDIES["ttrl"] = {  # test-time protocol: trains on the (unlabelled) evaluation prompts themselves
    "config": ["configs/objectives/ttrl.yaml", "configs/models/smollm2.yaml"],
    "flags": [*(f"--data.init_args.{s}={{class_path: ltune.datamodules.EmbeddedTasks, init_args: {ROOM1}}}"
                for s in ("train", "val")),
              "--trainer.max_steps=25", "--trainer.val_check_interval=25", "--data.init_args.batch_size=4",
              "--model.init_args.max_completion_length=48", "--model.init_args.max_new_tokens=48"],
    "arms": {
        "ttrl": ["--model.init_args.num_votes=8"],
        "placebo": ["--model.init_args.num_votes=8", "--model.init_args.placebo=true"],
        "grpo_true": ["--model=ltune.GRPO"],  # the verifier reward on the true answers: the upper bound
    },
    "metrics": ["val/exact_match"],
}  # fmt: skip
COIN_EVAL = ROOT / "runs/effects/coin/phrasings.jsonl"


def coin_eval_prompts() -> None:
    """50 held-out problems (difficulty 1, fixed seed 0) in 4 phrasings: the original and paraphrases 0, 1, 2 as
    categories phrasing0..3; training pairs draw paraphrases 0 and 1 only, so phrasing3 is never trained on."""
    from ltune.datamodules import EmbeddedTasks

    COIN_EVAL.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": q, "answer": p.answer, "category": f"phrasing{k}"}
            for p in EmbeddedTasks(format="paraphrase", n=50, split="val", seed=0, difficulties=[1]).problems()
            for k, q in enumerate((p.question, *p.paraphrases[:3]))]  # fmt: skip
    COIN_EVAL.write_text("".join(json.dumps(r) + "\n" for r in rows))


STUDIES["coin"] = {
    "prepare": coin_eval_prompts,
    "config": ["configs/objectives/coin.yaml", "configs/models/smollm2.yaml"],
    "flags": [*SHORT, "--data.init_args.train.init_args.n=480", D1.format("train"), D1.format("val"),
              "--data.init_args.train.init_args.paraphrases=[0,1]", f"--data.init_args.eval_prompts={COIN_EVAL}",
              "--model.init_args.max_new_tokens=64"],
    "arms": {"coin": [], "sft_pairs": ["--model.init_args.contrastive_weight=0"]},
    "metrics": ["val/exact_match", *(f"val/exact_match/phrasing{k}" for k in range(4)), "val/retrieval_acc"],
}  # fmt: skip
STUDIES["rest_em"] = {
    "config": [],
    "flags": [],
    "arms": {"rest_em": ["--config", "configs/loops/rest_em_smollm2.yaml"], "sft_reference": reference_rows},
    "metrics": ["val/exact_match"],
}
RLAIF_VAL = ROOT / "runs/effects/rlaif/val_pairs.jsonl"
RL_FLAGS = ["--trainer.max_steps=25", "--trainer.val_check_interval=25", "--data.init_args.batch_size=4",
            "--model.init_args.max_completion_length=48", "--model.init_args.max_new_tokens=48",
            "--model.init_args.temperature=0.6", f"--data.init_args.train.init_args.categories={ROOM}",
            D1.format("train"),
            f"--data.init_args.val={{class_path: ltune.datamodules.EmbeddedTasks, init_args: {ROOM1}}}"]  # fmt: skip
RLAIF = ["--config", "configs/objectives/rlaif.yaml", "--config", "configs/models/smollm2.yaml"]


def rlaif_val_pairs() -> None:
    """200 held-out preference pairs (fixed seed 0, the RL arms' four categories, difficulty 1) with their true label
    (preference 1: ``chosen`` is the correct answer), so the reward model's ``val/accuracy`` is against the truth."""
    from ltune.datamodules import EmbeddedTasks

    RLAIF_VAL.parent.mkdir(parents=True, exist_ok=True)
    rows = EmbeddedTasks(format="preference", n=200, split="val", seed=0, categories=["add", "compare", "mul", "sub"],
                         difficulties=[1]).rows()  # fmt: skip
    RLAIF_VAL.write_text("".join(json.dumps({**r, "preference": 1.0}) + "\n" for r in rows))


def reward_model_args(seed: int, out: Path) -> list[str]:
    return ["--config", "configs/objectives/rlaif_reward_model.yaml", "--config", "configs/models/smollm2.yaml",
            f"--data.init_args.labels_path={out / 'labels/train.jsonl'}", f"--data.init_args.val={RLAIF_VAL}",
            f"--data.init_args.train.init_args.categories={ROOM}", D1.format("train"),
            "--trainer.max_steps=100", "--trainer.val_check_interval=100"]  # fmt: skip


def rlaif_args(seed: int, out: Path) -> list[str]:
    ckpts = sorted((ROOT / "runs/effects/rlaif/reward_model" / f"seed{seed}").rglob("last.ckpt"))
    if not ckpts:
        sys.exit(f"rlaif/reward_model/seed{seed} has no checkpoint yet: run that arm first")
    return [*RLAIF, f"--model.init_args.reward_model={ckpts[-1]}", *RL_FLAGS]


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
    return {"pairs": len(rows), "accuracy": sum(r["preference"] > 0.5 for r in rows) / len(rows),
            "mean_label": statistics.mean(r["preference"] for r in rows), "accuracy_by_category": acc}  # fmt: skip


STUDIES["rlaif"] = {
    "prepare": rlaif_val_pairs,
    "config": [],
    "flags": [],
    "arms": {
        "reward_model": reward_model_args,
        "rlaif": rlaif_args,
        "grpo_verifier": [*RLAIF, "--model=ltune.GRPO", *RL_FLAGS],
    },  # fmt: skip
    "metrics": ["val/exact_match", "val/accuracy"],
    "extra": {"reward_model": labeler_accuracy},
}
LINE = re.compile(r"^\s+(\S+)\s+(-?[\d.]+|nan)\s+->\s+(-?[\d.]+|nan)$")


def run(study: str, arm: str, seed: int) -> dict:
    spec, out = STUDIES[study], ROOT / "runs/effects" / study / arm / f"seed{seed}"
    result = out / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    out.mkdir(parents=True, exist_ok=True)
    arm_args = spec["arms"][arm]
    arm_args = arm_args(seed, out) if callable(arm_args) else arm_args  # built from an earlier arm's outputs
    arm_configs = [a for a in arm_args if a == "--config" or a.endswith(".yaml")]
    arm_flags = [a for a in arm_args if a not in arm_configs]
    cmd = ["ltune", "fit", *arm_configs, *(a for c in spec["config"] for a in ("--config", c)), *spec["flags"],
           *arm_flags, f"--seed_everything={seed}", "--validate_around_fit=true",
           f"--trainer.default_root_dir={out}", "--trainer.enable_progress_bar=false"]  # fmt: skip
    print(" ".join(cmd), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    (out / "stdout.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"{study}/{arm}/seed{seed} failed; see {out / 'stdout.txt'}")
    moved = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in map(LINE.match, proc.stdout.splitlines()) if m}
    record = {"study": study, "arm": arm, "seed": seed, "command": cmd, "before_after": moved}
    if arm in spec.get("extra", {}):  # figures a study reads from the run's files
        record["extra"] = spec["extra"][arm](out)
    for path in out.rglob("rounds/rounds.json"):  # rounds callbacks: every round's figures
        record["rounds"] = json.loads(path.read_text())
    result.write_text(json.dumps(record, indent=1))
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=sorted(STUDIES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    spec, records = STUDIES[a.study], []
    if "prepare" in spec:
        spec["prepare"]()
    for seed in a.seeds:  # seed-major: an interrupted study has both arms of its first seeds
        for arm in spec["arms"]:
            records.append(run(a.study, arm, seed))
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
    out = ROOT / "benchmarks/results/effects" / f"{a.study}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seeds": a.seeds, "summary": summary, "runs": records}, indent=1))


if __name__ == "__main__":
    main()
