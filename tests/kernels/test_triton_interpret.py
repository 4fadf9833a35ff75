"""Every Triton kernel under the Triton interpreter (CPU), against the float64 references.

``TRITON_INTERPRET`` must be set before ``triton`` is first imported, and other tests in the same pytest process may
import ``triton`` (or torch may) without it. So the cases in ``triton_interpret_cases.py`` run once, in one
subprocess with ``TRITON_INTERPRET=1``, and each case is reported here as its own test. This process never imports
``triton``; the module is skipped when ``triton`` is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES_FILE = Path(__file__).with_name("triton_interpret_cases.py")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def _case_names() -> list[str]:
    spec = importlib.util.spec_from_file_location("_ltune_triton_interpret_cases", CASES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports torch and ltune.kernels only, never triton
    return list(module.CASES)


@pytest.fixture(scope="module")
def interpreter_results(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("triton_interpret") / "results.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, str(CASES_FILE), str(out)], env=env, capture_output=True, text=True, timeout=900
    )
    if not out.exists():
        pytest.fail(f"interpreter subprocess crashed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", _case_names())
def test_triton_kernel_under_interpreter(name: str, interpreter_results: dict[str, str]) -> None:
    assert name in interpreter_results, f"case {name} did not run"
    status = interpreter_results[name]
    assert status == "ok", status
