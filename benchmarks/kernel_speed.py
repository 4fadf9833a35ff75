"""Speed and memory of ltune.kernels against torch eager, torch.compile, Liger-Kernel and Cut Cross-Entropy.

GPU (CUDA events, bf16, the issue's shapes; Liger/CCE rows appear only where those packages import)::

    python benchmarks/kernel_speed.py                     # N=16384 V=151936 H=896 and N=8192 V=32000 H=4096
    python benchmarks/kernel_speed.py --shapes 4096x32000x1024 --reps 20

CPU (the exact torch path vs eager on smaller shapes; wall clock, peak RSS measured in a fresh subprocess per row)::

    python benchmarks/kernel_speed.py --cpu
    python benchmarks/kernel_speed.py --cpu --shapes 256x4096x64 --reps 1 --kernels b --methods ltune eager  # smoke

Kernels: (a) ``token_logprobs`` from existing logits; (b) ``linear_token_logprobs`` from hidden states and the
lm_head weight. Modes: ``fwd`` (no grad) and ``fwd+bwd`` (an arbitrary upstream gradient, as ORPO/GRPO need).
Peak memory is the peak allocation above the inputs. Figures: (a) forward bandwidth = bytes read+written / time,
against a measured device-to-device copy; (b) TFLOP/s = 2NHV (fwd) or 8NHV (fwd+bwd with recompute) / time, against
a measured bf16 ``[N, H] @ [H, V]`` matmul. Nothing here is asserted; it is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import provenance, status_mb

import ltune.kernels as K

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
GPU_SHAPES = ["16384x151936x896", "8192x32000x4096"]
CPU_SHAPES = ["2048x32000x256", "512x151936x128"]


# ----------------------------------------------------------------------------------------------------------- methods
def eager_token(logits, targets, temperature=1.0):
    """torch eager: log_softmax of a float32 copy, then gather (the common TRL/verl pattern)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (targets != -100)


def eager_linear(hidden, weight, targets):
    """torch eager for (b): the matmul first, then :func:`eager_token`."""
    return eager_token(hidden @ weight.T, targets)


def _ours_token(impl):
    return lambda logits, targets: K.token_logprobs(logits, targets, impl=impl).logprobs


def _ours_linear(impl, chunk_size):
    return lambda h, w, t: K.linear_token_logprobs(h, w, t, chunk_size=chunk_size, impl=impl).logprobs


def _liger_token():
    from liger_kernel.transformers.cross_entropy import LigerCrossEntropyLoss

    loss = LigerCrossEntropyLoss(reduction="none")
    # Liger overwrites its input with the gradient, so it gets a copy: the copy is part of the cost of keeping logits.
    return lambda logits, targets: -loss(logits.clone(), targets)


def _liger_linear():
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    loss = LigerFusedLinearCrossEntropyLoss(reduction="none")
    return lambda h, w, t: -loss(w, h, t)


def _cce_linear():
    from cut_cross_entropy import linear_cross_entropy

    return lambda h, w, t: -linear_cross_entropy(h, w, t, reduction="none")


def methods(kind: str, device: str, chunk_size: int) -> dict[str, Callable[[], Callable]]:
    """Factories (so that a missing package only loses its own row) for kernel ``kind`` in {"a", "b"}."""
    if kind == "a":
        table = {"ltune": lambda: _ours_token(None), "eager": lambda: eager_token}
        table["compile"] = lambda: torch.compile(eager_token, dynamic=False)
        if device == "cuda":
            table["ltune-torch-path"] = lambda: _ours_token("torch")
            table["liger (clone+CE)"] = _liger_token
        return table
    table = {"ltune": lambda: _ours_linear(None, chunk_size), "eager": lambda: eager_linear}
    table["compile"] = lambda: torch.compile(eager_linear, dynamic=False)
    if device == "cuda":
        table["liger FLCE"] = _liger_linear
        table["cce"] = _cce_linear
    return table


def chosen(table: dict, names: list[str] | None) -> dict:
    """The rows of ``table`` named in ``names`` (all of them when ``None``)."""
    return table if names is None else {k: v for k, v in table.items() if k in names}


# ----------------------------------------------------------------------------------------------------------- timing
def make_inputs(kind, n, v, h, dtype, device, grad):
    """Inputs filled in place (no temporaries), so that peak-memory baselines are not inflated by setup."""
    gen = torch.Generator(device=device).manual_seed(0)
    targets = torch.randint(0, v, (n,), device=device, generator=gen)
    if kind == "a":
        logits = torch.empty(n, v, device=device, dtype=dtype).normal_(0.0, 4.0, generator=gen)
        return (logits.requires_grad_(grad), targets)
    hidden = torch.empty(n, h, device=device, dtype=dtype).normal_(generator=gen)
    weight = torch.empty(v, h, device=device, dtype=dtype).normal_(0.0, h**-0.5, generator=gen)
    return (hidden.requires_grad_(grad), weight.requires_grad_(grad), targets)


def _step(fn, inputs, mode, upstream):
    if mode == "fwd":
        with torch.no_grad():
            return fn(*inputs)
    out = fn(*inputs)
    leaves = [x for x in inputs if x.requires_grad]
    return torch.autograd.grad(out.float(), leaves, grad_outputs=upstream)


def time_cuda(fn, inputs, mode, reps, warmup=2):
    upstream = torch.randn(inputs[-1].shape, device="cuda")
    for _ in range(warmup):
        _step(fn, inputs, mode, upstream)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = _step(fn, inputs, mode, upstream)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
        del result
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**20


def time_cpu(fn, inputs, mode, reps, warmup=1):
    upstream = torch.randn(inputs[-1].shape)
    for _ in range(warmup):
        _step(fn, inputs, mode, upstream)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        result = _step(fn, inputs, mode, upstream)
        times.append((time.perf_counter() - t0) * 1e3)
        del result
    return statistics.median(times)


def copy_bandwidth_gbs(nbytes: int) -> float:
    x = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    ms, _ = time_cuda(lambda a: y.copy_(a), (x,), "fwd", reps=20)
    return 2 * nbytes / ms / 1e6


def matmul_tflops(n: int, h: int, v: int) -> float:
    a = torch.randn(n, h, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(v, h, device="cuda", dtype=torch.bfloat16)
    ms, _ = time_cuda(lambda x, y: x @ y.T, (a, b), "fwd", reps=10)
    return 2 * n * h * v / ms / 1e9


# ----------------------------------------------------------------------------------------------------------- drivers
def run_gpu(args) -> list[dict]:
    dtype, rows = DTYPES[args.dtype], []
    dev = torch.cuda.get_device_name()
    for shape in args.shapes:
        n, v, h = (int(x) for x in shape.split("x"))
        copy_gbs = copy_bandwidth_gbs(n * v * 2)
        mm_tflops = matmul_tflops(n, h, v)
        print(f"# {dev} {shape}: copy {copy_gbs:.0f} GB/s, bf16 matmul {mm_tflops:.0f} TFLOP/s", flush=True)
        for kind in args.kernels:
            for name, factory in chosen(methods(kind, "cuda", args.chunk_size), args.methods).items():
                for mode in ("fwd", "fwd+bwd"):
                    row = {"kernel": kind, "shape": shape, "method": name, "mode": mode, "device": dev}
                    try:
                        fn = factory()
                        inputs = make_inputs(kind, n, v, h, dtype, "cuda", mode != "fwd")
                        ms, mib = time_cuda(fn, inputs, mode, args.reps)
                        row.update(ms=ms, peak_mib=mib)
                        if kind == "a" and mode == "fwd":
                            gbs = (n * v * 2 + n * 8 + n * 4) / ms / 1e6
                            row.update(gbs=gbs, copy_frac=gbs / copy_gbs)
                        if kind == "b":
                            tflops = (2 if mode == "fwd" else 8) * n * h * v / ms / 1e9
                            row.update(tflops=tflops, matmul_frac=tflops / mm_tflops)
                    except Exception as e:  # noqa: BLE001 - a method that fails loses its row only
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                    finally:
                        inputs = None
                        torch.cuda.empty_cache()
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def cpu_worker(spec: dict) -> dict:
    """One CPU measurement in this (fresh) process: median ms, and peak RSS above the inputs during the timed reps.

    The peak is Linux's VmHWM, reset after a warm-up run (``/proc/self/clear_refs``), so that lazily loaded code
    (torch.compile's compiler) is not counted as working memory; the parent fixes glibc's mmap threshold so freed
    large blocks leave the resident set instead of hiding the next run's temporaries.
    """
    torch.set_num_threads(spec["threads"])
    n, v, h = (int(x) for x in spec["shape"].split("x"))
    kind, mode = spec["kernel"], spec["mode"]
    inputs = make_inputs(kind, n, v, h, DTYPES[spec["dtype"]], "cpu", mode != "fwd")
    fn = methods(kind, "cpu", spec["chunk_size"])[spec["method"]]()
    _step(fn, inputs, mode, torch.randn(inputs[-1].shape))  # warm-up (and compilation)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the RSS high-water mark
    rss_before = status_mb("VmRSS")
    ms = time_cpu(fn, inputs, mode, spec["reps"], warmup=0)
    return {**spec, "ms": ms, "peak_mib": status_mb("VmHWM") - rss_before}


def run_cpu(args) -> list[dict]:
    rows = []
    for shape in args.shapes:
        for kind in args.kernels:
            for name in chosen(methods(kind, "cpu", args.chunk_size), args.methods):
                for mode in ("fwd", "fwd+bwd"):
                    spec = dict(kernel=kind, shape=shape, method=name, mode=mode, dtype=args.dtype)
                    spec.update(reps=args.reps, chunk_size=args.chunk_size, threads=torch.get_num_threads())
                    proc = subprocess.run(
                        [sys.executable, __file__, "--worker", json.dumps(spec)],
                        capture_output=True,
                        text=True,
                        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},  # big blocks go back to the OS
                    )
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                    row = json.loads(lines[-1]) if lines else {**spec, "error": proc.stderr.strip()[-200:]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    out = [
        "| kernel | shape NxVxH | method | mode | median ms | peak extra MiB | GB/s (copy %) | TFLOP/s (mm %) |",
        "|---|---|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['kernel']} | {r['shape']} | {r['method']} | {r['mode']} | n/a | n/a | {r['error']} | |")
            continue
        bw = f"{r['gbs']:.0f} ({100 * r['copy_frac']:.0f}%)" if "gbs" in r else ""
        tf = f"{r['tflops']:.1f} ({100 * r['matmul_frac']:.0f}%)" if "tflops" in r else ""
        line = f"| {r['kernel']} | {r['shape']} | {r['method']} | {r['mode']} | {r['ms']:.1f} | {r['peak_mib']:.0f} |"
        out.append(f"{line} {bw} | {tf} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="measure the torch path on CPU (smaller shapes)")
    parser.add_argument("--shapes", nargs="+", help="NxVxH; default: the issue's shapes (GPU) or CPU_SHAPES")
    parser.add_argument("--dtype", choices=list(DTYPES), help="default bf16 on GPU, fp32 on CPU")
    parser.add_argument("--reps", type=int, help="timed repetitions (median reported); default 10 GPU, 3 CPU")
    parser.add_argument("--chunk-size", type=int, default=None, help="ltune chunk_size (default 4096 GPU, 512 CPU)")
    parser.add_argument("--kernels", nargs="+", choices=["a", "b"], default=["a", "b"], help="which kernels to run")
    parser.add_argument("--methods", nargs="+", help="only these methods (e.g. ltune eager); default: every one")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(cpu_worker(json.loads(args.worker))))
        return
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --cpu for the torch-path figures")
    os.environ.setdefault("LTUNE_KERNELS", "auto")
    args.shapes = args.shapes or (CPU_SHAPES if args.cpu else GPU_SHAPES)
    args.dtype = args.dtype or ("fp32" if args.cpu else "bf16")
    args.reps = args.reps or (3 if args.cpu else 10)
    args.chunk_size = args.chunk_size or (512 if args.cpu else 4096)
    rows = run_cpu(args) if args.cpu else run_gpu(args)
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "provenance": provenance()}, f, indent=1)


if __name__ == "__main__":
    main()
