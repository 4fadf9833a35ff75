"""``ltune scaling`` killed with SIGKILL after its first budget, then started again, reuses the finished budget (same
config fingerprint) and ends with the scaling.csv of an uninterrupted study; a changed config refits every budget."""

import os
import signal
import subprocess
import sys
import time

import pytest

from ltune.cli import main
from tests.conftest import ROOT, cpu_env
from tests.datamodules.selection.conftest import SHRINK

ARGS = ["scaling", "--config", str(ROOT / "configs/selection/scaling.yaml"), *SHRINK, "--budgets", "0.25,0.5,1.0",
        "--output", "study", "--trainer.logger=false"]  # fmt: skip


@pytest.mark.slow  # two CLI runs in subprocesses
def test_sigkill_between_budgets_then_rerun_equals_an_uninterrupted_study(tmp_path, monkeypatch, capsys):
    straight, killed = tmp_path / "a", tmp_path / "b"
    straight.mkdir(), killed.mkdir()
    monkeypatch.chdir(straight)
    main(ARGS)
    expected = (straight / "study/scaling.csv").read_text()

    proc = subprocess.Popen([sys.executable, "-m", "ltune.cli", *ARGS], cwd=killed, env=cpu_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not (killed / "study/budgets/0.25.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the study ended before its first budget was written"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "study/scaling.csv").exists()
    monkeypatch.chdir(killed)
    capsys.readouterr()
    main(ARGS)
    assert "budget 0.25: reusing" in capsys.readouterr().out
    assert (killed / "study/scaling.csv").read_text() == expected

    main([*ARGS, "--trainer.max_steps=3"])  # another config: nothing reused
    assert "reusing" not in capsys.readouterr().out
