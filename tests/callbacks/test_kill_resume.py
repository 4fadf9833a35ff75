"""A ReST-EM run killed with SIGKILL in the middle of an E-step, then resumed from its rounds checkpoint, ends with
exactly the produced data of an uninterrupted run: no chunk lost, none duplicated, the same model after the resumed
M-step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.callbacks.conftest import ROOT, rest_em_config
from tests.conftest import cpu_env


def _fit(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ltune.cli", "fit", "--config", str(config), *extra]


def _produced(rounds_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(rounds_dir)): p.read_text() for p in sorted(rounds_dir.rglob("*.jsonl"))}


@pytest.mark.slow  # three CLI runs in subprocesses: minutes on 2 shared cores
def test_sigkill_mid_e_step_then_resume_equals_an_uninterrupted_run(tmp_path, solver_dir):
    straight_cfg = rest_em_config(tmp_path / "a", solver_dir, rounds=2)
    subprocess.run(_fit(straight_cfg), cwd=ROOT, env=cpu_env(), check=True, capture_output=True, timeout=600)
    straight = tmp_path / "a/runs/rest_em/version_0/rounds"

    killed_cfg = rest_em_config(tmp_path / "b", solver_dir, rounds=2)
    rounds = tmp_path / "b/runs/rest_em/version_0/rounds"
    proc = subprocess.Popen(_fit(killed_cfg), cwd=ROOT, env=cpu_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 600
    while not (rounds / "round_1/chunk_00000.jsonl").exists():  # the E-step after round 0's M-step has begun
        assert proc.poll() is None and time.time() < deadline, "the run ended before its second E-step"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (rounds / "round_1/train.jsonl").exists(), "killed too late: the E-step had already finished"
    written = sorted(p.name for p in (rounds / "round_1").glob("chunk_*.jsonl"))
    assert 1 <= len(written) < 8

    subprocess.run(_fit(killed_cfg, f"--ckpt_path={rounds / 'last.ckpt'}"), cwd=ROOT, env=cpu_env(), check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    produced, expected = _produced(rounds), _produced(straight)
    assert sorted(produced) == sorted(expected) and len(expected) == 2 * 9  # rounds 0-1: 8 chunks + train rows each
    for name, text in expected.items():
        assert produced[name] == text, name
    history = json.loads((rounds / "rounds.json").read_text())
    reference = json.loads((straight / "rounds.json").read_text())
    assert [h["round"] for h in history] == [0, 1]
    assert history == reference  # pass rates, kept counts and held-out accuracy of every round
