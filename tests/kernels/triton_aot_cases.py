"""Ahead-of-time compile of every Triton kernel as the host wrappers launch it; run by ``test_triton_aot.py``.

Run directly (``TRITON_INTERPRET`` unset): ``python tests/kernels/triton_aot_cases.py [out.json] [name-substring]``.

Each scenario calls one public function of ``ltune.kernels`` (forward and backward) with ``impl="triton"`` on small
CPU tensors while ``JITFunction.run`` is replaced by a recorder, so the whole host side of the GPU path runs
(dispatch, reshapes, compaction and chunking, block size and warp choice, allocations) and each ``kernel[grid](...)``
is recorded instead of launched. Every distinct recorded launch is then

1. bound to the kernel's parameter list: names and count, a tensor for each ``*_ptr`` parameter, a number for each
   other runtime parameter, a Python constant for each ``tl.constexpr``; the other keywords must be launch options;
2. turned into an AOT signature by the rules of Triton's launcher (tensor -> ``*<dtype>``, int -> ``i32``/``i64``,
   float -> ``fp32``, ``tt.divisibility=16`` for 16-byte-aligned pointers and multiples of 16), checked equal to what
   Triton's own launcher derives from the same arguments (``JITFunction.warmup`` under a CUDA-less stand-in driver,
   its compile cancelled by ``knobs.runtime.jit_cache_hook``);
3. compiled by ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` for each arch in ``ARCHS``
   down to a cubin, whose ELF arch and per-thread resources are read back with the bundled ``cuobjdump``.

Importing this module never imports ``triton`` (the pytest process only reads the scenario names and ``ARCHS``).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

import ltune.kernels as K

ARCHS = (80, 90)  # A100 (sm_80) and H100 (sm_90)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Qwen2.5's vocabulary (block 8192, 16 warps, a multiple of 16), a ragged one (block 8192, not a multiple of 16) and
# the tiny preset's byte vocabulary (block 512, 1 warp): the three launch configurations the wrappers choose
VOCABS = (151936, 32003, 384)
TRITON_TYPE = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int8: "i8",
    torch.bool: "i1",
}
SCENARIOS: dict[str, Callable[[], None]] = {}


def _targets(shape: tuple[int, ...], vocab: int) -> torch.Tensor:
    t = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(0))
    t.view(-1)[1::3] = K.IGNORE_INDEX
    return t


def _token(dtype: torch.dtype, vocab: int, with_entropy: bool, with_argmax: bool) -> None:
    logits = torch.zeros(2, 3, vocab, dtype=dtype, requires_grad=True)
    out = K.token_logprobs(
        logits, _targets((2, 3), vocab), temperature=0.7, with_entropy=with_entropy, with_argmax=with_argmax,
        impl="triton",
    )  # fmt: skip
    out.logprobs.sum().backward()


def _linear(dtype: torch.dtype, vocab: int, use_bias: bool, flags: bool) -> None:
    hidden = torch.zeros(2, 5, 16, dtype=dtype, requires_grad=True)
    weight = torch.zeros(vocab, 16, dtype=dtype, requires_grad=True)
    bias = torch.zeros(vocab, dtype=dtype, requires_grad=True) if use_bias else None
    out = K.linear_token_logprobs(
        hidden, weight, _targets((2, 5), vocab), bias=bias, temperature=1.3 if use_bias else 1.0,
        with_entropy=flags, with_argmax=flags, chunk_size=4, impl="triton",
    )  # fmt: skip
    out.logprobs.sum().backward()


def _orpo(dtype: torch.dtype, pairs: int) -> None:
    chosen = torch.full((pairs,), -1.0, dtype=dtype, requires_grad=True)
    rejected = torch.full((pairs,), -2.0, dtype=dtype, requires_grad=True)
    loss, odds = K.odds_ratio_loss(chosen, rejected, impl="triton")
    (loss.sum() + odds.sum()).backward()


def _register() -> None:
    flags = list(itertools.product((False, True), repeat=2))
    for (dn, dt), vocab, (ent, arg) in itertools.product(DTYPES.items(), VOCABS, flags):
        SCENARIOS[f"token[{dn}-V{vocab}-entropy{int(ent)}-argmax{int(arg)}]"] = partial(_token, dt, vocab, ent, arg)
    for (dn, dt), vocab, bias, flag in itertools.product(DTYPES.items(), (151936, 384), (False, True), (False, True)):
        SCENARIOS[f"linear[{dn}-V{vocab}-bias{int(bias)}-flags{int(flag)}]"] = partial(_linear, dt, vocab, bias, flag)
    for (dn, dt), pairs in itertools.product(DTYPES.items(), (7, 4096)):
        SCENARIOS[f"orpo[{dn}-B{pairs}]"] = partial(_orpo, dt, pairs)


_register()


@contextlib.contextmanager
def gpu_dispatch() -> Iterator[list[str]]:
    """``dispatch.resolve_impl`` as on a CUDA machine, yielding the implementations it chose.

    The real function runs, with ``TRITON_INTERPRET=1`` visible only during the call (its one CUDA-less way to accept
    ``impl="triton"`` on CPU tensors); the variable is gone again before any kernel module code reads it (the warp
    count depends on it). The kernel modules are imported before, so their kernels are compiled ``JITFunction`` objects.
    """
    from ltune.kernels import dispatch

    real, chosen = dispatch.resolve_impl, []

    def resolve(impl: str | None, *tensors: torch.Tensor) -> str:
        os.environ["TRITON_INTERPRET"] = "1"
        try:
            chosen.append(real(impl, *tensors))
        finally:
            del os.environ["TRITON_INTERPRET"]
        return chosen[-1]

    dispatch.resolve_impl = resolve
    try:
        yield chosen
    finally:
        dispatch.resolve_impl = real


@contextlib.contextmanager
def recorded_launches() -> Iterator[list[tuple[Any, tuple, dict, Any]]]:
    """Replace ``JITFunction.run`` (what ``kernel[grid](...)`` calls) by a recorder of ``(kernel, args, kwargs, grid)``.

    Nothing is launched; the wrappers go on with their uninitialised outputs, which is all their host code needs.
    """
    from triton.runtime.jit import JITFunction

    real, launches = JITFunction.run, []

    def record(self, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
        launches.append((self, args, kwargs, grid))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = real


def bind_launch(kernel: Any, args: tuple, kwargs: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bind a recorded launch to ``kernel``'s parameters; return ``(arguments by name, launch options)``.

    Raises:
        TypeError: too many/missing/unknown arguments, or an argument of the wrong kind for its parameter.
    """
    from triton.backends.nvidia.compiler import CUDAOptions

    sig = inspect.signature(kernel.fn)
    options = {k: v for k, v in kwargs.items() if k not in sig.parameters}
    unknown = sorted(set(options) - set(CUDAOptions.__dataclass_fields__))
    if unknown:
        raise TypeError(f"{kernel.__name__}: keywords {unknown} are neither parameters nor launch options")
    bound = sig.bind(*args, **{k: v for k, v in kwargs.items() if k in sig.parameters})
    bound.apply_defaults()
    constexprs = {p.name for p in kernel.params if p.is_constexpr}
    for name, value in bound.arguments.items():
        if name in constexprs:
            ok = isinstance(value, (bool, int, float)) and not isinstance(value, torch.Tensor)
        elif name.endswith("_ptr"):
            ok = isinstance(value, torch.Tensor)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise TypeError(f"{kernel.__name__}: parameter {name} got {type(value).__name__} {value!r:.60}")
    return dict(bound.arguments), options


def _scalar_type(value: int | float) -> str:
    if isinstance(value, float):
        return "fp32"
    return "i32" if -(2**31) <= value < 2**31 else "i64" if value < 2**63 else "u64"


def aot_spec(kernel: Any, arguments: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any], dict[tuple, list]]:
    """``(signature, constexprs, attrs)`` for ``ASTSource`` from the bound arguments of one launch."""
    constexpr_names = {p.name for p in kernel.params if p.is_constexpr}
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, value) in enumerate(arguments.items()):
        if name in constexpr_names:
            signature[name], constexprs[name] = "constexpr", value
            continue
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + TRITON_TYPE[value.dtype]
            aligned = value.data_ptr() % 16 == 0
        else:
            signature[name] = _scalar_type(value)
            aligned = isinstance(value, int) and value % 16 == 0
        if aligned:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, constexprs, attrs


class StandInDriver:
    """The three driver calls ``JITFunction.run`` makes before it compiles, answered for a chosen target."""

    def __init__(self) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", ARCHS[0], 32)

    def get_current_device(self) -> str:
        return f"cuda-sm{self.target.arch}"

    def get_current_stream(self, device: Any = None) -> int:
        return 0

    def get_current_target(self) -> Any:
        return self.target


def launcher_spec(kernel: Any, args: tuple, kwargs: dict, grid: Any, stand_in: StandInDriver) -> dict[str, Any]:
    """What Triton's launcher would compile for this launch on ``stand_in.target``, without compiling it."""
    import triton

    seen: list[dict] = []

    def cancel(**hook_kwargs: Any) -> bool:
        seen.append(hook_kwargs["compile"])
        return True  # skip the compile

    previous, triton.knobs.runtime.jit_cache_hook = triton.knobs.runtime.jit_cache_hook, cancel
    try:
        kernel.warmup(*args, grid=grid, **kwargs)
    finally:
        triton.knobs.runtime.jit_cache_hook = previous
    (spec,) = seen
    data = json.loads(spec["specialization_data"])
    attrs = {tuple(k): v for k, v in zip(data["attrs_keys"], data["attrs_vals"]) if v}
    names = [p.name for p in kernel.params]
    return {
        "signature": dict(spec["signature"]),
        "constexprs": {names[k[0]]: v for k, v in spec["constants"].items()},
        "attrs": attrs,
        "num_warps": spec["num_warps"],
    }


def _cuobjdump(cubin: bytes) -> dict[str, Any]:
    import triton

    tool = triton.knobs.nvidia.cuobjdump.path
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        elf = subprocess.run([tool, "-elf", f.name], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    usage = dict(re.findall(r"\b(REG|LOCAL|STACK|SHARED):(\d+)", res))
    return {
        "elf_sm": int(re.search(r"sm=(\d+)", elf).group(1)),
        "regs": int(usage["REG"]),
        "local_bytes": int(usage["LOCAL"]),
        "static_shared": int(usage["SHARED"]),
    }


def compile_launch(kernel: Any, signature: dict, constexprs: dict, attrs: dict, options: dict, arch: int) -> dict:
    """``triton.compile`` one launch for ``sm_<arch>``; the cubin's size, ELF arch and resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    start = time.perf_counter()
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    cubin = compiled.asm["cubin"]
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "name": compiled.metadata.name,
        "cubin_bytes": len(cubin),
        "elf_magic": cubin[:4] == b"\x7fELF",
        "num_warps": compiled.metadata.num_warps,
        "shared": compiled.metadata.shared,
        **_cuobjdump(cubin),
    }


def _launch_id(kernel: Any, signature: dict, constexprs: dict, attrs: dict, options: dict) -> str:
    key = json.dumps([signature, constexprs, sorted(map(str, attrs.items())), options], sort_keys=True)
    return f"{kernel.__name__}#{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _kernels() -> dict[str, dict[str, Any]]:
    """Every launchable kernel (a ``JITFunction`` named ``*_kernel``) in the Triton modules of ``ltune.kernels``."""
    from triton.runtime.jit import JITFunction

    from ltune.kernels import triton_linear, triton_logprobs, triton_orpo

    found = {}
    for module in (triton_logprobs, triton_linear, triton_orpo):
        for name, obj in vars(module).items():
            if isinstance(obj, JITFunction) and name.endswith("_kernel"):
                found[name] = {"class": type(obj).__name__, "params": [p.name for p in obj.params]}
    return found


def run(selected: dict[str, Callable[[], None]]) -> dict[str, Any]:
    """Capture, bind, check and compile every scenario in ``selected``; a JSON-able report."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDAOptions, get_ptxas
    from triton.runtime.driver import driver

    report: dict[str, Any] = {
        "archs": list(ARCHS),
        "ptxas": {arch: f"{get_ptxas(arch).path} (CUDA {get_ptxas(arch).version})" for arch in ARCHS},
        "kernels": _kernels(),
        "scenarios": {},
        "launches": {},
    }
    stand_in = StandInDriver()
    driver.set_active(stand_in)  # this process never launches: the stand-in stays until it exits
    for name, scenario in selected.items():
        entry: dict[str, Any] = {"status": "ok", "launches": []}
        report["scenarios"][name] = entry
        try:
            with gpu_dispatch() as chosen, recorded_launches() as launches:
                scenario()
            entry["impl"] = chosen
            for kernel, args, kwargs, grid in launches:
                arguments, options = bind_launch(kernel, args, kwargs)
                signature, constexprs, attrs = aot_spec(kernel, arguments)
                launch_id = _launch_id(kernel, signature, constexprs, attrs, options)
                entry["launches"].append(launch_id)
                if launch_id in report["launches"]:
                    continue
                grid = grid(arguments) if callable(grid) else grid
                launch: dict[str, Any] = {
                    "kernel": kernel.__name__,
                    "params": [p.name for p in kernel.params],
                    "bound": list(arguments),
                    "signature": signature,
                    "constexprs": constexprs,
                    "attrs": {str(k[0]): v for k, v in attrs.items()},
                    "options": options,
                    "grid": list(grid),
                    "launcher": {},
                    "compiled": {},
                }
                report["launches"][launch_id] = launch
                for arch in ARCHS:
                    stand_in.target = GPUTarget("cuda", arch, 32)
                    spec = launcher_spec(kernel, args, kwargs, grid, stand_in)
                    warps = options.get("num_warps", CUDAOptions.num_warps)
                    ours = {"signature": signature, "constexprs": constexprs, "attrs": attrs, "num_warps": warps}
                    launch["launcher"][arch] = "ok" if spec == ours else f"launcher {spec!r} != ours {ours!r}"
                    try:
                        launch["compiled"][arch] = compile_launch(kernel, signature, constexprs, attrs, options, arch)
                    except Exception:  # noqa: BLE001 - reported per launch and arch, the others still compile
                        launch["compiled"][arch] = {"error": traceback.format_exc()}
        except Exception:  # noqa: BLE001 - one failing scenario must not hide the others
            entry["status"] = traceback.format_exc()
    return report


def main(argv: list[str]) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("unset TRITON_INTERPRET: the AOT compile needs compiled JITFunctions", file=sys.stderr)
        return 2
    out = Path(argv[1]) if len(argv) > 1 else None
    pattern = argv[2] if len(argv) > 2 else ""
    selected = {k: v for k, v in SCENARIOS.items() if pattern in k}
    start = time.perf_counter()
    report = run(selected)
    report["seconds"] = round(time.perf_counter() - start, 1)
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
    bad = [k for k, v in report["scenarios"].items() if v["status"] != "ok"]
    compiled = [c for launch in report["launches"].values() for c in launch["compiled"].values()]
    print(f"{len(selected)} scenarios, {len(report['launches'])} distinct launches, {len(compiled)} compiles, "
          f"{report['seconds']} s; failed scenarios: {bad}")  # fmt: skip
    return 1 if bad or any("error" in c for c in compiled) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
