"""Each speed benchmark runs its documented smoke invocation from the checkout's root (the ``# smoke`` line of its
docstring, run as written): the harness, both sides of a comparison and the report work, whatever they measure.
Nothing is timed or asserted about speed here; the figures live in RESULTS."""

import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEED = ["kernel_speed", "train_throughput", "rl_throughput", "decode_profile", "selection"]


def smoke_command(script: Path) -> list[str]:
    """The docstring's one command marked ``# smoke`` (backslash continuations joined), as argv."""
    doc = ast.get_docstring(ast.parse(script.read_text()))
    (line,) = [ln for ln in doc.replace("\\\n", " ").splitlines() if "# smoke" in ln]
    return shlex.split(line.split("#")[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", SPEED)
def test_each_speed_benchmark_runs_its_documented_smoke_invocation(name, tmp_path):
    cmd = smoke_command(ROOT / "benchmarks" / f"{name}.py")
    assert cmd[:2] == ["python", f"benchmarks/{name}.py"], cmd
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TMPDIR": str(tmp_path)}
    run = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "failed" not in run.stdout and '"error"' not in run.stdout, run.stdout[-3000:]
