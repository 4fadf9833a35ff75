"""The inputs some study arms need besides a config, made from the configs and the runs they depend on (a study's
``prepare`` steps call these; sizes, categories and seeds come from the configs named, never from this file).

    python benchmarks/prepare.py truncated --layers 8 --out DIR          # the real model cut to its first layers
    python benchmarks/prepare.py rows --config C [--config C2 ...] --key K [--format F] [--seed S] [--label 1.0]
        [--categories-from C3 --categories-key K3] [--unpaired-halves] --out FILE
                                                                         # the EmbeddedTasks that configs name, as jsonl
    python benchmarks/prepare.py references --run DIR --config C --key K --seed S --out FILE
                                                                         # reference solutions of the prompts a
                                                                         # ReST-EM run's last round kept
    python benchmarks/prepare.py imitation --run DIR --config C --out FILE   # Lion's round 0 on its final pool size
    python benchmarks/prepare.py teacher --out DIR                       # the quickstart's export (Lion's teacher)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def merge(base, over):
    """``over`` on ``base`` as configs given one after another compose: mappings merge key by key, the rest replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
    return over


def lookup(configs: list[str], key: str):
    """A value of YAML configs composed in order, by dotted key (list items by index: ``trainer.callbacks.0``)."""
    value: dict = {}
    for config in configs:
        value = merge(value, yaml.safe_load((ROOT / config).read_text()))
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def tasks(configs: list[str], key: str, **override) -> list[dict]:
    """The rows of the ``ltune.datamodules.EmbeddedTasks`` that configs name at ``key``, with fields overridden."""
    from ltune.datamodules import EmbeddedTasks

    spec = lookup(configs, key)
    return EmbeddedTasks(**{**spec.get("init_args", spec), **override}).rows()


def write_jsonl(rows: list[dict], out: str) -> None:
    from ltune.io import atomic_write_jsonl

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(Path(out), rows)  # two processes may write it at once
    print(f"{out}: {len(rows)} rows")


def halves(pairs: list[dict]) -> list[dict]:
    """Preference pairs as truly unpaired rows (KTO's setting): the chosen completion of each even-numbered pair as a
    desirable row, the rejected one of each odd-numbered pair as an undesirable row, so no prompt keeps both."""
    out = []
    for i, pair in enumerate(pairs):
        label = i % 2 == 0
        extra = {k: pair[k] for k in ("answer", "category") if k in pair}
        out.append(
            {"prompt": pair["prompt"], "completion": pair["chosen" if label else "rejected"], "label": label, **extra}
        )
    return out


def truncated(layers: int, out: str) -> None:
    """The real model cut to its first ``layers`` decoder layers, saved once as a Hugging Face folder (Superfiltering's
    small scorer: no smaller pretrained LM with its tokenizer is available offline)."""
    if (Path(out) / "config.json").is_file():
        return
    from ltune.backbone import Backbone

    backbone = Backbone("smollm2-135m-instruct")
    model = backbone.load_frozen()
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    model.save_pretrained(out)
    backbone.tokenizer.save_pretrained(out)


def references(run: str, configs: list[str], key: str, seed: int, out: str) -> None:
    """One reference solution per row a ReST-EM run's last round kept (same prompts, same count), from the problems
    its config names at ``key`` drawn with ``seed``."""
    rounds = sorted(Path(run).rglob("round_*/train.jsonl"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not rounds:
        sys.exit(f"{run} has no round data yet: run that arm first")
    kept = [json.loads(line) for line in rounds[-1].read_text().splitlines() if line.strip()]
    reference = {r["prompt"]: r for r in tasks(configs, key, format="instruction", seed=seed)}
    write_jsonl([reference[k["prompt"]] for k in kept], out)


def imitation(run: str, configs: list[str], out: str) -> None:
    """A config fragment for Lion's imitation-only control: its callbacks with round 0 alone, on as many instructions
    as the Lion run's final Train Pool."""
    found = sorted(Path(run).rglob("rounds/rounds.json"))
    if not found:
        sys.exit(f"{run} has no rounds.json yet: run that arm first")
    pool = int(max(h.get("train_pool", 0) for h in json.loads(found[-1].read_text())))
    callbacks = lookup(configs, "trainer.callbacks")
    callbacks[0]["init_args"]["rounds"] = 1
    callbacks[0]["init_args"]["instructions"]["init_args"]["n"] = pool
    Path(out).write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    print(f"{out}: imitation on {pool} instructions")


def teacher(out: str) -> None:
    """Lion's teacher and referee: the quickstart's LoRA SFT (seed 0), exported merged under ``out``."""
    if list(Path(out).rglob("hf/config.json")):
        return
    shutil.rmtree(out, ignore_errors=True)  # an interrupted run starts over (the study names version_0)
    config = ["--config", "configs/quickstart_smollm2.yaml"]
    cmd = [sys.executable, "-m", "ltune.cli", "fit", *config, f"--trainer.default_root_dir={out}"]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("truncated")
    t.add_argument("--layers", type=int, required=True)
    r = sub.add_parser("rows")
    r.add_argument("--format")
    r.add_argument("--seed", type=int)
    r.add_argument("--categories-from")
    r.add_argument("--categories-key")
    r.add_argument("--label", type=float, help="a preference label every row gets (the truth of generated pairs)")
    r.add_argument("--unpaired-halves", action="store_true", help="pairs split in two halves, unpaired (see halves)")
    f = sub.add_parser("references")
    f.add_argument("--seed", type=int, required=True)
    i = sub.add_parser("imitation")
    for s in (r, f, i):
        s.add_argument("--config", action="append", required=True, help="configs composed in order (repeat)")
    for s in (r, f):
        s.add_argument("--key", required=True)
    for s in (f, i):
        s.add_argument("--run", required=True)
    te = sub.add_parser("teacher")
    for s in (t, r, f, i, te):
        s.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.cmd == "truncated":
        truncated(a.layers, a.out)
    elif a.cmd == "rows":
        override = {k: v for k, v in (("format", a.format), ("seed", a.seed)) if v is not None}
        rows = tasks(a.config, a.key, **override)
        if a.categories_from:
            wanted = set(lookup([a.categories_from], a.categories_key))
            rows = [row for row in rows if row["category"] in wanted]
        rows = halves(rows) if a.unpaired_halves else rows
        write_jsonl([{**row, "preference": a.label} if a.label is not None else row for row in rows], a.out)
    elif a.cmd == "references":
        references(a.run, a.config, a.key, a.seed, a.out)
    elif a.cmd == "imitation":
        imitation(a.run, a.config, a.out)
    else:
        teacher(a.out)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
