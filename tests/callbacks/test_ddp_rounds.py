"""The E-step shards over DDP ranks (chunk ``i`` on rank ``i % world_size``, seeded by ``(seed, round, i)``) and its
output does not depend on the number of processes: two gloo processes on CPU write the same chunk files and the same
``train.jsonl`` rows, in the same order, as one process, with every problem produced exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltune.callbacks.rounds import read_jsonl
from tests.callbacks.conftest import rest_em_config
from tests.conftest import cpu_env


def _run(tmp_path: Path, solver_dir: Path, *extra: str) -> tuple[Path, str]:
    config = rest_em_config(tmp_path, solver_dir, rounds=2)
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["callbacks"][0]["init_args"]["problems"]["init_args"]["n"] = 40  # 5 chunks of 8: uneven shards
    cfg["trainer"]["callbacks"][0]["init_args"]["num_samples"] = 8  # the micro solver must solve some of 40 problems
    cfg["model"]["init_args"]["optimizer"]["init_args"]["lr"] = 0.0  # the same weights at every E-step, any world
    config.write_text(yaml.safe_dump(cfg))
    done = subprocess.run([sys.executable, "-m", "ltune.cli", "fit", "--config", str(config), *extra], cwd=tmp_path,
                          env=cpu_env(), check=True, capture_output=True, text=True, timeout=600)  # fmt: skip
    return tmp_path / "runs/rest_em/version_0/rounds", done.stdout + done.stderr


@pytest.mark.slow  # two CLI runs, one of them two DDP processes: about a minute on 2 shared cores
def test_two_ddp_ranks_produce_the_rows_of_one_process(tmp_path, solver_dir):
    single, _ = _run(tmp_path / "one", solver_dir)
    ddp, output = _run(tmp_path / "two", solver_dir, "--trainer.strategy=ddp", "--trainer.devices=2")
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output  # two processes really ran
    assert not (tmp_path / "two/runs/rest_em/version_1").exists()  # both ranks wrote under one run folder
    problems = None
    for r in (0, 1):
        names = sorted(p.name for p in (single / f"round_{r}").glob("*.jsonl"))
        assert names == [f"chunk_{i:05d}.jsonl" for i in range(5)] + ["train.jsonl"]
        assert sorted(p.name for p in (ddp / f"round_{r}").glob("*.jsonl")) == names
        for name in names:
            assert read_jsonl(ddp / f"round_{r}" / name) == read_jsonl(single / f"round_{r}" / name), (r, name)
        produced = [p["prompt"] for i in range(5) for p in read_jsonl(ddp / f"round_{r}/chunk_{i:05d}.jsonl")]
        assert len(produced) == 40 == len(set(produced))  # every problem once: none lost, none duplicated
        assert problems is None or produced == problems
        problems = produced
        chunks = [p for i in range(5) for p in read_jsonl(ddp / f"round_{r}/chunk_{i:05d}.jsonl")]
        rows = [(row["prompt"], row["response"]) for row in read_jsonl(ddp / f"round_{r}/train.jsonl")]
        assert rows and rows == [(p["prompt"], s) for p in chunks for s in p["solutions"]]  # each kept solution once
    history, reference = (json.loads((d / "rounds.json").read_text()) for d in (ddp, single))
    for h, ref in zip(history, reference, strict=True):
        assert {k: h[k] for k in ("round", "pass_rate", "solved", "kept")} == {
            k: ref[k] for k in ("round", "pass_rate", "solved", "kept")
        }
        assert h["held_out/exact_match"] == pytest.approx(ref["held_out/exact_match"])
