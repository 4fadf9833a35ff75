"""The lab: run any study of ``benchmarks/studies/`` through the real CLI and keep each run's record; write RESULTS.

A study is data (``benchmarks/studies/<name>.yaml``, schema in ``benchmarks/studies/README.md``); this is the one
program that runs them. Each arm and seed runs ``python -m ltune.cli <verb> --config ... <flags>`` in its own process
with its outputs under ``runs/lab/<study>/<arm>/seed<S>/``; its record,
``benchmarks/records/<study>/<arm>-seed<S>.json``,
holds the run's own ``run.json`` (commit, versions, machine, load average, command, config, metrics before and after
fit), the wall time and the load average around the run; the completions of its last evaluation sit next to it. A run
whose record exists is never repeated, so a study resumes where it stopped.

    python benchmarks/lab.py run quickstart --seeds 0 1 2
    python benchmarks/lab.py run orpo --dry-run          # the commands alone
    python benchmarks/lab.py report                      # regenerate benchmarks/RESULTS.md from the records
    python benchmarks/lab.py report --check              # fail when the committed RESULTS differs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STUDIES, RECORDS = HERE / "studies", HERE / "records"
RUNNER_FLAGS = {"fit": ["--validate_around_fit=true", "--trainer.enable_progress_bar=false"]}
RULES = {"effect": ("beats_control", "beats_start"), "benchmark": ("at_least", "at_most")}
REQUIRED = {
    "effect": ("title", "question", "protocol", "verb", "configs", "arms", "seeds", "metrics", "verdict"),
    "benchmark": ("title", "question", "protocol", "command", "records", "columns"),
}


def load_study(name: str | Path, studies: Path = STUDIES) -> dict:
    """A study's YAML with its ``name``; raises ``ValueError`` naming the file and the missing key."""
    path = Path(name) if str(name).endswith(".yaml") else studies / f"{name}.yaml"
    study = yaml.safe_load(path.read_text())
    kind = study.get("kind")
    if kind not in REQUIRED:
        raise ValueError(f"{path}: kind must be one of {sorted(REQUIRED)}, got {kind!r}")
    missing = [k for k in REQUIRED[kind] if k not in study]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    if kind == "effect" and study.get("control") not in (None, *study["arms"]):
        raise ValueError(f"{path}: control {study['control']!r} is not one of the arms {list(study['arms'])}")
    rule = study.get("verdict") or {}
    if rule and rule.get("rule") not in RULES[kind]:
        raise ValueError(f"{path}: verdict rule must be one of {RULES[kind]}, got {rule.get('rule')!r}")
    if kind == "effect" and rule.get("rule") == "beats_control" and not (rule.get("control") or study.get("control")):
        raise ValueError(f"{path}: the rule beats_control needs a control")
    return {**study, "name": path.stem, "path": path}


def all_studies(studies: Path = STUDIES) -> list[dict]:
    return [load_study(p) for p in sorted(studies.glob("*.yaml"))]


def run_dir(study: dict, arm: str, seed: int, runs: Path) -> Path:
    return runs / study["name"] / arm / f"seed{seed}"


def fill(text: str, study: dict, seed: int, runs: Path) -> str:
    """``{seed}``, ``{run:<arm>}`` (that arm's run folder at this seed) and ``{runs}`` (the study's folder, for what
    every seed shares) filled in."""
    for arm in study.get("arms", {}):
        text = text.replace(f"{{run:{arm}}}", str(run_dir(study, arm, seed, runs)))
    return text.replace("{seed}", str(seed)).replace("{runs}", str(runs / study["name"]))


def prepare_steps(study: dict, arm: str) -> list[str]:
    """The shell commands that make an arm's inputs: ``prepare`` as a mapping names them per arm."""
    return study.get("prepare", {}).get(arm, [])


def arm_command(study: dict, arm: str, seed: int, runs: Path) -> list[str]:
    """The CLI call of one arm at one seed."""
    verb = study["verb"]
    flags = [fill(f, study, seed, runs) for f in [*study.get("args", []), *(study["arms"][arm] or [])]]
    return [
        sys.executable,
        "-m",
        "ltune.cli",
        verb,
        *(x for c in study["configs"] for x in ("--config", c)),
        *flags,
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={run_dir(study, arm, seed, runs)}",
        *RUNNER_FLAGS.get(verb, []),
    ]


def record_path(study: dict, arm: str, seed: int, records: Path = RECORDS) -> Path:
    return records / study["name"] / f"{arm}-seed{seed}.json"


def newest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.rglob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run_arm(study: dict, arm: str, seed: int, runs: Path, records: Path, env: dict) -> Path:
    """Run one arm at one seed and write its record (the run's ``run.json`` plus wall time and load)."""
    out = run_dir(study, arm, seed, runs)
    shutil.rmtree(out, ignore_errors=True)  # a run without a record starts over
    cmd = arm_command(study, arm, seed, runs)
    print("$", shlex.join(cmd), flush=True)
    load, start = os.getloadavg(), time.time()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    wall, load_after = time.time() - start, os.getloadavg()
    run_json = newest(out, "run.json")
    if run_json is None:
        raise RuntimeError(f"{out}: the run wrote no run.json")
    run = json.loads(run_json.read_text())
    path = record_path(study, arm, seed, records)
    path.parent.mkdir(parents=True, exist_ok=True)
    completions = newest(run_json.parent / "completions", "*.jsonl")  # the last evaluation
    if completions is not None:
        shutil.copyfile(completions, path.with_suffix(".completions.jsonl"))
    model = run.get("config", {}).get("model", {}).get("init_args", {})
    metric = model.get("answer_match", "strict")  # how evaluation read answers in this run
    record = {"study": study["name"], "arm": arm, "seed": seed, "metric": metric, "wall_s": round(wall, 1)}
    record |= {"load_average": {"before": load, "after": load_after}, "run": run}
    if table := newest(out, "scaling.csv"):  # `ltune scaling`: one row per budget and category
        record["scaling"] = list(csv.DictReader(table.open()))
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def run(name: str, seeds: list[int] | None, arms: list[str] | None, dry_run: bool, runs: Path, records: Path) -> None:
    study = load_study(name)
    if study["kind"] != "effect":
        raise SystemExit(f"{name} is a benchmark: run its command: {study['command']}")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # prepare steps: this python
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"), "PATH": path}
    for seed in seeds or study["seeds"]:
        for arm in arms or study["arms"]:
            if record_path(study, arm, seed, records).is_file():
                continue
            steps = [fill(step, study, seed, runs) for step in prepare_steps(study, arm)]
            needs = [
                a
                for a in study["arms"]
                if f"{{run:{a}}}" in " ".join([*study["arms"][arm], *prepare_steps(study, arm)])
            ]
            for other in needs:  # a record without its run folder (another machine): that arm must run again first
                if not run_dir(study, other, seed, runs).is_dir() and not dry_run:
                    raise SystemExit(
                        f"{arm} (seed {seed}) needs {other}'s run folder {run_dir(study, other, seed, runs)} (gone): "
                        f"delete {record_path(study, other, seed, records)} and run again to rerun {other} first"
                    )
            if dry_run:
                print(*(f"{step}\n" for step in steps), shlex.join(arm_command(study, arm, seed, runs)), sep="")
                continue
            for step in steps:
                print("$", step, flush=True)
                subprocess.run(step, shell=True, cwd=ROOT, env=env, check=True)
            print("record:", run_arm(study, arm, seed, runs, records, env), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a study's arms and seeds that have no record yet")
    r.add_argument("study")
    r.add_argument("--seeds", type=int, nargs="+")
    r.add_argument("--arms", nargs="+")
    r.add_argument("--dry-run", action="store_true")
    r.add_argument("--runs", type=Path, default=ROOT / "runs/lab")
    r.add_argument("--records", type=Path, default=RECORDS)
    g = sub.add_parser("report", help="write benchmarks/RESULTS.md from the studies and their records")
    g.add_argument("--check", action="store_true", help="exit 1 when the committed RESULTS differs")
    a = p.parse_args(argv)
    if a.cmd == "run":
        run(a.study, a.seeds, a.arms, a.dry_run, a.runs.resolve(), a.records.resolve())
        return
    from benchmarks.report import render

    text, path = render(all_studies()), HERE / "RESULTS.md"
    if a.check:
        raise SystemExit(0 if path.read_text() == text else f"{path} differs from the records: rerun the report")
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)} ({text.count(chr(10))} lines)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
