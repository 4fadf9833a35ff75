"""How many held-out `compare` answers scored right state a false comparison.

``ltune.rewards.extract_answer`` falls back to the last number of a completion, so "3 is larger than 39." counts as
the right answer to "Which is larger, 39 or 3?". This script generates a model's greedy answers to a config's
evaluation prompts (the instruct model, or a checkpoint of that config's model) and counts, among the `compare`
answers scored right, those that state the answer ("The answer is X" or a boxed X) and those whose sentence
"X is larger/bigger/greater than Y" has X <= Y or that say "equal".

    python benchmarks/false_comparisons.py --config configs/loops/rest_em_smollm2.yaml [--ckpt PATH]
"""

from __future__ import annotations

import argparse
import json
import re
from decimal import Decimal

import torch

from ltune.cli import LTuneCLI
from ltune.rewards import extract_answer, is_equivalent

CLAIM = re.compile(r"(\d+(?:\.\d+)?) is (?:the )?(?:larger|bigger|greater)(?: number)? than (\d+(?:\.\d+)?)")
STATED = re.compile(r"(?:the answer is|boxed\{)\s*\$?(\d+(?:\.\d+)?)", re.IGNORECASE)  # the answer in its own words


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--ckpt", default=None, help="a Lightning checkpoint of the config's model; none: its start")
    a = p.parse_args()
    args = ["--config", a.config, "--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.default_root_dir=/tmp"]
    cli = LTuneCLI(run=False, args=args)
    model, data = cli.model, cli.datamodule
    model.configure_model()
    if a.ckpt:
        model.load_state_dict(torch.load(a.ckpt, map_location="cpu", weights_only=False)["state_dict"])
    data.adopt(model)
    data.setup("validate")
    loaders = data.val_dataloader()
    rows = []
    model.eval()
    with torch.no_grad():
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            for batch in (b for b in loader if "prompt_ids" in b):
                texts = model.generate_text(batch["prompt_ids"], batch["prompt_mask"])
                for text, answer, category in zip(texts, batch["answer"], batch["category"]):
                    rows.append({"category": category, "answer": answer, "text": text})
    right = [r for r in rows if is_equivalent(extract_answer(r["text"]), r["answer"])]
    compare = [r for r in right if r["category"] == "compare"]
    stated = [r for r in compare if any(is_equivalent(s, r["answer"]) for s in STATED.findall(r["text"])[-1:])]
    false = [
        r
        for r in compare
        if " equal" in r["text"] or any(Decimal(x) <= Decimal(y) for x, y in CLAIM.findall(r["text"]))
    ]
    report = {
        "config": a.config,
        "ckpt": a.ckpt,
        "prompts": len(rows),
        "scored_right": len(right),
        "compare_prompts": sum(r["category"] == "compare" for r in rows),
        "compare_scored_right": len(compare),
        "of_which_stated": len(stated),
        "of_which_false_comparison": len(false),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
