"""GPU readiness without a GPU: every Triton kernel, exactly as the host wrappers launch it, compiled to cubins.

The scenarios of ``triton_aot_cases.py`` drive ``token_logprobs``, ``linear_token_logprobs`` and ``odds_ratio_loss``
(forward and backward, through ``ltune.kernels`` dispatch with ``impl="triton"``) on CPU tensors in fp32, bf16 and
fp16: with and without entropy / argmax and bias, at temperatures 0.7, 1.0 and 1.3 (a runtime fp32 argument, not a
constexpr), at three vocabularies that make the wrapper choose its launch configurations (Qwen2.5's 151936: block 8192
and 16 warps, a multiple of 16; 32003: the same block, ragged; the tiny preset's 384: block 512, 1 warp), and ORPO
batches of 7 and 4096 pairs. Every ``kernel[grid](...)`` they issue is recorded instead of launched and bound to the
kernel's parameter list, so a wrong argument count, name or kind (pointer / scalar / constexpr) fails here; it is
turned into an AOT signature, checked equal to what Triton's own launcher would derive, and compiled by
``triton.compile`` for sm_80 and sm_90. Every distinct (kernel, dtype, constexpr set, specialisation) is compiled for
both archs, nothing subsetted: with the current kernels 57 distinct launches, 114 cubins, 45-60 s on 2 CPU cores
(Triton 3.9). Same-kind swaps (two int scalars, two pointers of one dtype) compile either way: the interpreter tests
catch those by value.

It all runs in one subprocess without ``TRITON_INTERPRET`` (the interpreter tests need it set before ``triton`` is
imported, the compile needs it unset) and with a fresh ``TRITON_CACHE_DIR``, so each run really compiles. No GPU is
used: ``triton.compile`` takes an explicit ``GPUTarget`` and the ``ptxas`` bundled with the Triton wheel. The module is
skipped only when ``triton`` is not installed, like the interpreter tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kernels.triton_aot_cases import ARCHS, DTYPES, SCENARIOS

CASES_FILE = Path(__file__).with_name("triton_aot_cases.py")
# per-block limits a launch must fit: threads, 32-bit registers per SM, opt-in shared memory (bytes) per arch
MAX_THREADS = 1024
REGISTER_FILE = 65536
MAX_SHARED = {80: 166912, 90: 232448}  # A100 163 KiB, H100 227 KiB
MAX_GRID = (2**31 - 1, 65535, 65535)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.fixture(scope="module")
def aot(tmp_path_factory) -> dict[str, Any]:
    """The report of one ``triton_aot_cases.py`` run over every scenario."""
    tmp = tmp_path_factory.mktemp("triton_aot")
    out = tmp / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITON_OVERRIDE_ARCH")}
    env["TRITON_CACHE_DIR"] = str(tmp / "cache")
    proc = subprocess.run(
        [sys.executable, str(CASES_FILE), str(out)], env=env, capture_output=True, text=True, timeout=900
    )
    if not out.exists():
        pytest.fail(f"AOT subprocess crashed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr[-5000:]}")
    return json.loads(out.read_text())


def _launches(aot: dict[str, Any], kernel: str) -> list[dict[str, Any]]:
    return [launch for launch in aot["launches"].values() if launch["kernel"] == kernel]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_wrapper_launches_compile_for_sm80_and_sm90(name: str, aot: dict[str, Any]) -> None:
    scenario = aot["scenarios"].get(name)
    assert scenario is not None, f"scenario {name} did not run"
    assert scenario["status"] == "ok", scenario["status"]
    assert scenario["impl"] and set(scenario["impl"]) == {"triton"}, f"dispatch chose {scenario['impl']}"
    assert scenario["launches"], "the Triton path launched no kernel"
    for launch_id in scenario["launches"]:
        launch = aot["launches"][launch_id]
        assert launch["bound"] == launch["params"], f"{launch_id}: arguments bind to {launch['bound']}"
        grid = launch["grid"]
        assert 1 <= len(grid) <= 3 and all(1 <= g <= m for g, m in zip(grid, MAX_GRID)), f"{launch_id}: grid {grid}"
        warps = launch["options"].get("num_warps", 4)  # Triton's default when a launch names none
        for arch in ARCHS:
            key = str(arch)
            assert launch["launcher"][key] == "ok", f"{launch_id} sm_{arch}: {launch['launcher'][key]}"
            cubin = launch["compiled"][key]
            assert "error" not in cubin, f"{launch_id} sm_{arch} does not compile:\n{cubin.get('error')}"
            assert cubin["elf_magic"] and cubin["cubin_bytes"] > 0, f"{launch_id} sm_{arch}: not a cubin"
            assert cubin["elf_sm"] == arch, f"{launch_id}: compiled for sm_{cubin['elf_sm']}, asked sm_{arch}"
            assert cubin["name"] == launch["kernel"] and cubin["num_warps"] == warps
            threads = 32 * warps
            assert threads <= MAX_THREADS
            assert cubin["regs"] * threads <= REGISTER_FILE, f"{launch_id} sm_{arch}: {cubin['regs']} regs/thread"
            assert cubin["shared"] + cubin["static_shared"] <= MAX_SHARED[arch], f"{launch_id} sm_{arch}: shared"


def test_every_kernel_is_a_compiled_jit_function_launched_in_every_dtype(aot: dict[str, Any]) -> None:
    """Each ``*_kernel`` of the Triton modules is reached by some wrapper, with fp32, bf16 and fp16 inputs."""
    assert aot["kernels"], "no Triton kernel found in ltune.kernels"
    wanted = {f"*{d}" for d in DTYPES}
    for kernel, info in aot["kernels"].items():
        assert info["class"] == "JITFunction", f"{kernel} is a {info['class']} (interpreter mode?)"
        first = info["params"][0]
        seen = {launch["signature"][first] for launch in _launches(aot, kernel)}
        assert seen >= wanted, f"{kernel}.{first} compiled only as {sorted(seen)}"


def test_every_bool_constexpr_is_compiled_both_ways_in_every_dtype(aot: dict[str, Any]) -> None:
    """Each boolean ``tl.constexpr`` (``WITH_ENTROPY``, ``WITH_ARGMAX``, ...) is compiled on and off in each dtype."""
    checked = 0
    for kernel, info in aot["kernels"].items():
        launches = _launches(aot, kernel)
        first = info["params"][0]
        for param in info["params"]:
            values = [launch["constexprs"].get(param) for launch in launches]
            if not any(isinstance(v, bool) for v in values):
                continue
            for dtype in DTYPES:
                got = {launch["constexprs"][param] for launch in launches if launch["signature"][first] == f"*{dtype}"}
                assert got == {False, True}, f"{kernel}.{param} in {dtype}: only {got}"
                checked += 1
    assert checked, "no boolean constexpr found: the kernels or their recording changed"
