"""Notebook measurements of ORPO / CUT / CoIN on the tiny model (commands and figures in the hand-written
RESULTS.md of commit 07c8cc9).

python benchmarks/objective_effects.py paraphrase-prompts --n 50 --out para_eval.jsonl
    held-out prompts, each problem under its 4 phrasings, category "phrasing<k>": pass as eval_prompts and
    the run logs val/exact_match/phrasing<k>
python benchmarks/objective_effects.py wrong-tokens --ckpt runs/cut/version_0/checkpoints/<c>.ckpt  (or an HF folder)
    mean probability, without the judgment, of the first token at which a held-out negatively judged response
    departs from the correct solution (the token its judgment calls wrong), given the correct prefix
python benchmarks/objective_effects.py vote-headroom --ckpt runs/quickstart/version_0/hf --temperature 0.6
    (add --categories sum --difficulties 1 2 for the multi-path task; --ckpt smollm2-135m-instruct --system-prompt
    "..." for the real model in its prompt style) greedy exact match vs mean sample accuracy,
    maj@N and pass@N of N samples per held-out prompt (TTRL / RLSC can at best move greedy decoding to the majority
    answer)
python benchmarks/objective_effects.py cut-flags --ckpt runs/cut/version_0/checkpoints/<c>.ckpt  (or an HF folder)
    the Misalign tokens CUT flags (p(y_t | x, j-) / p(y_t | x) > threshold) on held-out negative rows, bracketed
python benchmarks/objective_effects.py phrasing-spread --metrics runs/coin/version_0/metrics.csv
    exact match per phrasing at the last validation, their mean and standard deviation
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import statistics

import torch


def load_objective(cls, ckpt: str):
    """An objective of class ``cls`` in eval mode, from an exported Hugging Face folder or a Lightning checkpoint."""
    from ltune.backbone import Backbone

    if os.path.isdir(ckpt):  # an exported Hugging Face folder (e.g. the quickstart's runs/.../hf)
        model = cls(backbone=Backbone(ckpt))
        model.configure_model()
    else:
        model = cls.load_from_checkpoint(ckpt, map_location="cpu")
    return model.eval()


def paraphrase_prompts(n: int, out: str, seed: int = 0, difficulties: list[int] | None = None) -> None:
    from ltune.datamodules import EmbeddedTasks

    with open(out, "w") as f:
        for p in EmbeddedTasks(format="paraphrase", n=n, split="val", seed=seed, difficulties=difficulties).problems():
            for k, prompt in enumerate((p.question, *p.paraphrases[:3])):
                f.write(json.dumps({"prompt": prompt, "answer": p.answer, "category": f"phrasing{k}"}) + "\n")
    print(f"wrote {4 * n} prompts to {out}")


@torch.no_grad()
def wrong_tokens(
    ckpt: str,
    n: int = 200,
    seed: int = 0,
    split: str = "val",
    difficulties: list[int] | None = None,
    categories: list[str] | None = None,
) -> dict[str, float]:
    from ltune.datamodules import EmbeddedTasks, JudgmentData
    from ltune.forward import completion_logprobs
    from ltune.objectives.base import Objective

    if ckpt.startswith("init:"):  # the randomly initialised tiny model of that init seed (before training)
        from ltune.backbone import Backbone, Tiny

        model = Objective(backbone=Backbone("tiny", tiny=Tiny(init_seed=int(ckpt[5:]))))
        model.configure_model()
        model.eval()
    else:
        model = load_objective(Objective, ckpt)
    source = EmbeddedTasks(
        format="judgment", n=n, split=split, seed=seed, difficulties=difficulties, categories=categories
    )
    dm = JudgmentData()
    dm.tokenizer = model.tokenizer
    probs = []
    for row, problem in zip(source.rows(), source.problems()):
        if row["label"] != "negative":
            continue
        wrong = dm.encode_pair(row["instruction"], row["response"])
        right = dm.encode_pair(row["instruction"], problem.solution)
        t = next(i for i, (a, b) in enumerate(zip(wrong["input_ids"], right["input_ids"])) if a != b)
        ids = torch.tensor([wrong["input_ids"][: t + 1]])
        labels = torch.full_like(ids, -100)
        labels[0, t] = ids[0, t]
        lp = completion_logprobs(model.model, ids, torch.ones_like(ids), labels).logprobs
        probs.append(lp[0, t - 1].exp().item())
    out = {"p_first_wrong_token": statistics.mean(probs), "rows": len(probs), "split": split}
    print(json.dumps(out))
    return out


@torch.no_grad()
def vote_headroom(
    ckpt: str,
    temperature: float = 0.6,
    n: int = 200,
    samples: int = 16,
    difficulties: list[int] | None = None,
    categories: list[str] | None = None,
    split: str = "val",
    system_prompt: str | None = None,
    max_tokens: int = 64,
) -> dict[str, float]:
    from ltune import TTRL
    from ltune.backbone import Backbone
    from ltune.datamodules import EmbeddedTasks, PromptData
    from ltune.generation import decode
    from ltune.rewards import extract_answer, is_equivalent, majority_vote

    torch.manual_seed(0)
    model = TTRL(
        backbone=Backbone(ckpt, system_prompt=system_prompt),
        num_votes=samples,
        num_generations=2,
        temperature=temperature,
        max_completion_length=max_tokens,
        max_new_tokens=max_tokens,
    )
    model.configure_model()
    model.eval()
    tasks = EmbeddedTasks(format="prompts", n=n, split=split, difficulties=difficulties, categories=categories)
    dm = PromptData(train=tasks, batch_size=20)
    dm.tokenizer, dm.default_system = model.tokenizer, system_prompt
    dm.setup("fit")
    sample_acc, maj, pass_n, greedy, cats = [], [], [], [], []
    for batch in dm.train_dataloader():
        texts = decode(model.tokenizer, model.rollout(batch))
        tok = model.tokenizer
        greedy_samples = model.sampler(
            model.model,
            batch["prompt_ids"],
            batch["prompt_mask"],
            max_new_tokens=max_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        best = decode(tok, greedy_samples)
        for i, truth in enumerate(batch["answer"]):
            answers = [extract_answer(t) for t in texts[samples * i : samples * (i + 1)]]
            hits = [is_equivalent(a, truth) for a in answers]
            sample_acc.append(sum(hits) / samples)
            maj.append(float(is_equivalent(majority_vote(answers)[0], truth)))
            pass_n.append(float(any(hits)))
            greedy.append(float(is_equivalent(extract_answer(best[i]), truth)))
            cats.append(batch["category"][i])
    columns = {"greedy": greedy, "mean_sample_acc": sample_acc, f"maj@{samples}": maj, f"pass@{samples}": pass_n}
    out = {k: statistics.mean(v) for k, v in columns.items()}
    print(json.dumps({"temperature": temperature, **out}))
    for cat in sorted(set(cats)):  # the same figures per category
        idx = [i for i, c in enumerate(cats) if c == cat]
        per = {k: round(statistics.mean(v[i] for i in idx), 4) for k, v in columns.items()}
        print(json.dumps({"category": cat, "n": len(idx), **per}))
    return out


@torch.no_grad()
def cut_flags(
    ckpt: str,
    n: int = 60,
    threshold: float = 1.1,
    show: int = 8,
    difficulties: list[int] | None = None,
    categories: list[str] | None = None,
):
    from ltune import CUT
    from ltune.datamodules import EmbeddedTasks, JudgmentData

    model = load_objective(CUT, ckpt)
    dm = JudgmentData(
        val=EmbeddedTasks(format="judgment", n=n, split="val", difficulties=difficulties, categories=categories),
        eval_batch_size=n,
    )
    dm.tokenizer = model.tokenizer
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()[0]))
    lp, response, first = model.response_logprobs(batch)
    counts, total = collections.Counter(), 0
    for k, row in enumerate(batch["negative_rows"]):  # Align-N row `row` and its Misalign copy `first + k`
        judged, plain = response[row], response[first + k]
        flagged = ((lp[row][judged] - lp[first + k][plain]).exp() > threshold).tolist()
        chars = [model.tokenizer.decode([t]) for t in batch["input_ids"][first + k, 1:][plain].tolist()]
        if k < show:
            print("".join(f"[{c}]" if f else c for c, f in zip(chars, flagged)))
        counts.update(c for c, f in zip(chars, flagged) if f)
        total += len(chars)
    out = {"flagged_frac": sum(counts.values()) / max(total, 1), "most_flagged": counts.most_common(10)}
    print(json.dumps(out))
    return out


def phrasing_spread(metrics: str) -> dict[str, float]:
    with open(metrics) as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/exact_match/phrasing0")]
    last = rows[-1]
    em = [float(last[f"val/exact_match/phrasing{k}"]) for k in range(4)]
    out = {"step": int(last["step"]), "em_per_phrasing": em, "mean": statistics.mean(em), "std": statistics.pstdev(em)}
    print(json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("paraphrase-prompts")
    a.add_argument("--n", type=int, default=50)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", required=True)
    a.add_argument("--difficulties", type=int, nargs="+", default=None)
    b = sub.add_parser("wrong-tokens")
    b.add_argument("--ckpt", required=True)
    b.add_argument("--n", type=int, default=200)
    b.add_argument("--split", default="val", help="val (held out) or train (with the run's data seed)")
    b.add_argument("--seed", type=int, default=0, help="data seed of the rows (the run's for --split train)")
    b.add_argument("--difficulties", type=int, nargs="+", default=None)
    b.add_argument("--categories", nargs="+", default=None, help="e.g. sum (default: the six default categories)")
    v = sub.add_parser("vote-headroom")
    v.add_argument("--ckpt", required=True, help="an exported Hugging Face folder")
    v.add_argument("--temperature", type=float, default=0.6)
    v.add_argument("--n", type=int, default=200)
    v.add_argument("--samples", type=int, default=16)
    v.add_argument("--difficulties", type=int, nargs="+", default=[1])
    v.add_argument("--categories", nargs="+", default=None, help="e.g. sum (default: the six default categories)")
    v.add_argument("--split", default="val", help="val, or test: prompts a test-time run never saw")
    v.add_argument("--system-prompt", default=None, help="the backbone's prompt style (configs/models/smollm2.yaml)")
    v.add_argument("--max-tokens", type=int, default=64, help="token budget of greedy and sampled answers")
    f = sub.add_parser("cut-flags")
    f.add_argument("--ckpt", required=True)
    f.add_argument("--n", type=int, default=60)
    f.add_argument("--threshold", type=float, default=1.1)
    f.add_argument("--difficulties", type=int, nargs="+", default=[1])
    f.add_argument("--categories", nargs="+", default=None, help="e.g. sum (default: the six default categories)")
    c = sub.add_parser("phrasing-spread")
    c.add_argument("--metrics", required=True)
    args = parser.parse_args()
    if args.cmd == "paraphrase-prompts":
        paraphrase_prompts(args.n, args.out, args.seed, args.difficulties)
    elif args.cmd == "wrong-tokens":
        wrong_tokens(args.ckpt, args.n, args.seed, args.split, args.difficulties, args.categories)
    elif args.cmd == "cut-flags":
        cut_flags(args.ckpt, args.n, args.threshold, difficulties=args.difficulties, categories=args.categories)
    elif args.cmd == "vote-headroom":
        vote_headroom(
            args.ckpt,
            args.temperature,
            args.n,
            args.samples,
            args.difficulties,
            args.categories,
            args.split,
            args.system_prompt,
            args.max_tokens,
        )
    else:
        phrasing_spread(args.metrics)


if __name__ == "__main__":
    main()
