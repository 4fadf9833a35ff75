"""The lab (``benchmarks/lab.py``, ``benchmarks/report.py``): a study runs through the real CLI and keeps each run's
own record; the committed RESULTS is the report generated from the studies and their records."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
import yaml

from benchmarks import lab
from benchmarks.report import anchor, benchmark_section, effect_runs, render, resolve, verdict
from tests.conftest import MICRO, ROOT


def test_committed_results_are_the_generated_report():
    text = render(lab.all_studies())
    assert (ROOT / "benchmarks/RESULTS.md").read_text() == text, "run: python benchmarks/lab.py report"
    assert text.count("\n") <= 500


@pytest.mark.parametrize("study", lab.all_studies(), ids=lambda s: s["name"])
def test_every_study_names_what_exists(study):
    if study["kind"] == "benchmark":
        for rec in study["records"]:
            rec = rec if isinstance(rec, dict) else {"file": rec}
            text = (ROOT / "benchmarks" / rec["file"]).read_text()
            again = (ROOT / "benchmarks" / rec["rerun"]).read_text() if "rerun" in rec else None
            for col in study["columns"]:  # None only where a run of the record failed (e.g. killed out of memory),
                if "path" in col and not col.get("optional"):  # or in a column only some records have
                    if col.get("rerun") and again is None:  # a row without a rerun shows "–"
                        continue
                    src = again if col.get("rerun") else text
                    assert resolve(json.loads(src), col["path"]) is not None or '"failed"' in src, (rec, col)
        return
    flags = [f for arm in study["arms"].values() for f in arm or []]
    configs = [*study["configs"], *(f.removeprefix("--config=") for f in flags if f.startswith("--config="))]
    configs = [c for c in configs if "{run:" not in c]  # made by a prepare step
    assert configs and all((ROOT / c).is_file() for c in configs), configs
    assert set(study["verdict"]["arms"]) <= set(study["arms"]) or study.get("expand")
    assert set(study.get("prepare", {})) <= set(study["arms"])
    for arm in study["arms"]:
        cmd = " ".join(lab.arm_command(study, arm, study["seeds"][0], Path("/tmp/runs")))
        assert not re.search(r"\{(run:|seed\}|runs\})", cmd), cmd  # every placeholder filled


def test_a_study_runs_through_the_cli_and_its_record_makes_the_report(tmp_path):
    study = {
        "kind": "effect",
        "title": "Micro SFT vs no learning",
        "question": "Does SFT lower the validation loss of the micro model?",
        "protocol": "The micro tiny model, 4 steps.",
        "verb": "fit",
        "configs": ["configs/objectives/sft.yaml"],
        "args": [
            *MICRO,
            "--trainer.max_steps=4",
            "--data.init_args.train.init_args.n=32",
            "--data.init_args.val.init_args.n=8",
            "--data.init_args.eval_prompts.init_args.n=4",
        ],
        "arms": {"sft": [], "frozen": ["--model.init_args.optimizer.init_args.lr=0.0"]},
        "control": "frozen",
        "seeds": [0, 1],
        "metrics": ["val/loss", "val/exact_match"],
        "verdict": {"rule": "beats_control", "arms": ["sft"], "metric": "val/loss", "higher_is_better": False},
    }
    path = tmp_path / "studies/micro.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(study))
    runs, records = tmp_path / "runs", tmp_path / "records"
    lab.run(str(path), None, None, False, runs, records)
    rec = json.loads((records / "micro/sft-seed0.json").read_text())
    run = rec["run"]
    assert rec["metric"] == "strict" and rec["wall_s"] > 0 and len(rec["load_average"]["before"]) == 3
    assert {"command", "config", "ltune", "versions", "machine", "validation"} <= set(run)
    assert "--model.init_args.optimizer.init_args.lr=0.0" in " ".join(
        json.loads((records / "micro/frozen-seed0.json").read_text())["run"]["command"]
    )
    completions = [json.loads(x) for x in (records / "micro/sft-seed0.completions.jsonl").read_text().splitlines()]
    assert len(completions) == 4
    mtime = (records / "micro/sft-seed0.json").stat().st_mtime
    lab.run(str(path), None, None, False, runs, records)  # resumable: a run with a record is not repeated
    assert (records / "micro/sft-seed0.json").stat().st_mtime == mtime

    loaded = lab.load_study(path)
    got = {(r["arm"], r["seed"]): r for r in effect_runs(loaded, records)}
    assert got["sft", 0]["after"]["val/loss"] == run["validation"]["after"]["val/loss"]
    sft = [got["sft", seed]["after"]["val/loss"] for seed in (0, 1)]
    frozen = [got["frozen", seed]["after"]["val/loss"] for seed in (0, 1)]
    assert frozen == pytest.approx(
        [got["frozen", seed]["before"]["val/loss"] for seed in (0, 1)]
    )  # lr 0 learns nothing
    gap = statistics.fmean(frozen) - statistics.fmean(sft)  # lower is better
    spreads = statistics.stdev(sft) + statistics.stdev(frozen)
    ((arm, word, figures),) = verdict(loaded, list(got.values()))
    assert (arm, word) == (
        "sft",
        "works" if gap > spreads else "below its control" if -gap > spreads else "effect not shown",
    )
    report = render([loaded], records)
    start = statistics.fmean(got["sft", seed]["before"]["val/loss"] for seed in (0, 1))
    row = f"| `sft` | {start:.3f} | {sft[0]:.3f} | {sft[1]:.3f} |"
    assert row in report and "(strict)" in report


def test_a_verdict_follows_its_rule_by_hand():
    study = {"control": "c", "verdict": {"rule": "beats_control", "arms": ["a"], "metric": "m"}}
    runs = [
        {"arm": arm, "seed": s, "before": {}, "after": {"m": v}}
        for arm, s, v in [("a", 0, 0.50), ("a", 1, 0.60), ("c", 0, 0.40), ("c", 1, 0.42)]
    ]
    # a: 0.55 ± 0.0707, c: 0.41 ± 0.0141; difference 0.14 > 0.0849: works
    assert verdict(study, runs)[0][1] == "works"
    runs[1]["after"]["m"] = 0.40  # a: 0.45 ± 0.0707; difference 0.04 < 0.0849
    assert verdict(study, runs)[0][1] == "effect not shown"
    study["verdict"]["higher_is_better"] = False
    runs[0]["after"]["m"], runs[1]["after"]["m"] = 0.60, 0.62  # a above c by 0.2 where lower is better
    assert verdict(study, runs)[0][1] == "below its control"
    runs[3]["seed"] = 2  # seeds 0 and 1 of a, 0 and 2 of c: one matched seed is too few for a verdict
    assert verdict(study, runs)[0][1] == "too few seeds"


def test_an_at_most_verdict_reads_its_bound_only_where_the_figure_is_missing(tmp_path):
    records = {"measured": {"r": 0.4, "b": 0.9}, "bounded": {"r": None, "b": 0.45}, "over": {"r": None, "b": 0.7}}
    for name, data in records.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    study = {
        "title": "t",
        "question": "q",
        "protocol": "p",
        "command": "c",
        "records": [{"file": str(tmp_path / f"{name}.json"), "label": name} for name in records],
        "columns": [{"name": "case", "label": True}, {"name": "ratio", "path": "r"}, {"name": "bound", "path": "b"}],
        "verdict": {"rule": "at_most", "column": "ratio", "bound": "bound", "target": 0.5},
    }
    (_, word, figures), *_ = benchmark_section(study)[1]
    assert (word, figures) == (
        "met in part",
        '2 of 3 rows have ratio <= 0.5 (1 read from "bound", the figure itself missing)',
    )
    study["verdict"] = {"rule": "at_least", "column": "ratio", "bound": "bound", "target": 0.3}  # a bound from above
    (_, word, figures), *_ = benchmark_section(study)[1]  # proves nothing for at_least
    assert (word, figures) == ("met in part", "1 of 3 rows have ratio >= 0.3")


def test_a_rerun_column_reads_the_rerun_record_and_shows_a_dash_without_one(tmp_path):
    study = {
        "title": "t",
        "question": "q",
        "protocol": "p",
        "command": "c",
        "records": [
            {"file": str(tmp_path / "first.json"), "label": "a", "rerun": str(tmp_path / "again.json")},
            {"file": str(tmp_path / "alone.json"), "label": "b"},
        ],
        "columns": [
            {"name": "case", "label": True},
            {"name": "ratio", "path": "ratio"},
            {"name": "last, rerun", "path": "ratio[2]", "rerun": True},
            {"name": "median, rerun", "path": "ratio", "rerun": True, "reduce": "median"},
        ],
    }
    for name, ratio in {"first": 1.59, "again": [1.6, 1.69, 1.8], "alone": 2.0}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"ratio": ratio}))
    lines = benchmark_section(study)[0]
    assert "| a | 1.590 | 1.800 | 1.690 |" in lines and "| b | 2.000 | – | – |" in lines


def test_prepare_reads_its_values_from_the_configs(tmp_path):
    """The inputs of ReST-EM's and Lion's controls: made from the configs and the method arm's output alone."""
    from benchmarks import prepare

    rest_em = ["configs/loops/rest_em_smollm2.yaml"]
    key = "trainer.callbacks.0.init_args.problems"
    problems = prepare.tasks(rest_em, key, format="instruction", seed=1)
    spec = yaml.safe_load((ROOT / rest_em[0]).read_text())["trainer"]["callbacks"][0]["init_args"]["problems"]
    assert len(problems) == spec["init_args"]["n"] and {p["category"] for p in problems} <= set(
        spec["init_args"]["categories"]
    )
    kept = [problems[5], problems[2], problems[5]]  # a round keeps up to max_solutions rows of a prompt
    round_dir = tmp_path / "rest_em/rounds/round_1"
    round_dir.mkdir(parents=True)
    (round_dir / "train.jsonl").write_text("".join(json.dumps({**p, "response": "model text"}) + "\n" for p in kept))
    prepare.main(
        [
            "references",
            "--run",
            str(tmp_path / "rest_em"),
            "--config",
            rest_em[0],
            "--key",
            key,
            "--seed",
            "1",
            "--out",
            str(tmp_path / "ref.jsonl"),
        ]
    )
    assert [json.loads(x) for x in (tmp_path / "ref.jsonl").read_text().splitlines()] == kept

    lion = tmp_path / "lion/rounds"
    lion.mkdir(parents=True)
    (lion / "rounds.json").write_text(json.dumps([{"train_pool": 400.0}, {"train_pool": 431.0}, {"train_pool": 452.0}]))
    out = tmp_path / "imitation.yaml"
    prepare.main(
        ["imitation", "--run", str(tmp_path / "lion"), "--config", "configs/loops/lion_smollm2.yaml", "--out", str(out)]
    )
    (callback,) = yaml.safe_load(out.read_text())["trainer"]["callbacks"][:1]
    shipped = yaml.safe_load((ROOT / "configs/loops/lion_smollm2.yaml").read_text())["trainer"]["callbacks"][0]
    assert callback["init_args"]["rounds"] == 1 and callback["init_args"]["instructions"]["init_args"]["n"] == 452
    shipped["init_args"]["rounds"], shipped["init_args"]["instructions"]["init_args"]["n"] = 1, 452
    assert callback == shipped  # nothing else changed

    # KTO's study: the DPO config's pairs split into unpaired halves, one completion per prompt
    out = tmp_path / "halves.jsonl"
    key = "data.init_args.train"
    prepare.main(
        ["rows", "--config", "configs/objectives/dpo.yaml", "--key", key, "--unpaired-halves", "--out", str(out)]
    )
    pairs = prepare.tasks(["configs/objectives/dpo.yaml"], key)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == len(pairs) == 4000 and [r["prompt"] for r in rows] == [p["prompt"] for p in pairs]
    assert [r["completion"] for r in rows[:2]] == [pairs[0]["chosen"], pairs[1]["rejected"]]
    assert [r["label"] for r in rows[:4]] == [True, False, True, False] and sum(r["label"] for r in rows) == 2000


def numbers(text: str) -> list[str]:
    """Decimal figures (``0.385``, ``1.58x``) and durations (``230 s``, ``1,307 s``) of a text, versions left out."""
    figures = re.findall(r"(?<![\d.])(?<!torch )(\d+\.\d+)(?![\d.])", text)
    return figures + [d.replace(",", "") for d in re.findall(r"(?<![\d.,])(\d[\d,]*) s\b", text)]


def test_readme_figures_are_in_the_report():
    """Every figure of README's opening and method table is one the report shows (rounded the same way) in the
    section the line links to (``[↗][key]``), else anywhere in it, so each traces to a record; code blocks (what a
    command prints) are left out."""
    readme = (ROOT / "README.md").read_text()
    results = (ROOT / "benchmarks/RESULTS.md").read_text()
    targets = dict(re.findall(r"^\[([\w-]+)\]: benchmarks/RESULTS\.md#([\w-]+)$", readme, re.M))
    sections = {anchor(m.group(1)): m.group(0) for m in re.finditer(r"^## (.*)\n(?:(?!^## ).*\n?)*", results, re.M)}
    # a paragraph's lines are joined: its links count for all of it
    quoted = re.sub(r"```.*?```", "", readme[: readme.index("## Swap any piece")], flags=re.S)
    missing = []
    for block in re.split(r"\n(?=\|)|\n\n", quoted):
        keys = re.findall(r"\[↗\]\[([\w-]+)\]", block)
        where = "".join(sections[targets[k]] for k in keys) if keys else results
        found = [float(x) for x in re.findall(r"-?\d+\.\d+|\d+", where.replace(",", ""))]
        for figure in numbers(block):
            places = len(figure.split(".")[1]) if "." in figure else 0
            if not any(abs(float(figure) - y) <= 0.5 * 10**-places + 1e-9 for y in found):
                missing.append((figure, keys))
    assert not missing, f"README figures not in the RESULTS sections they link to: {missing}"
