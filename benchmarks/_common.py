"""Shared pieces of the side-by-side benchmarks: the machine's measured matmul rate (the physical limit of a step),
alternated subprocess runs with medians and spread, the load average, and a phase timer for profiles."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5, device: str = "cpu", dtype: str = "float32") -> float:
    """Median ``n x n @ n x n`` rate on ``threads`` threads (or a GPU: ``device="cuda"``) in ``dtype``, in GFLOP/s
    (the compute floor's rate)."""
    import torch

    torch.set_num_threads(threads)
    n = 8192 if device != "cpu" else n  # a GPU needs a large product to reach its rate
    a, b = (torch.randn(n, n, device=device, dtype=getattr(torch, dtype)) for _ in range(2))
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t = now()
        a @ b
        times.append(now() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def now() -> float:
    """``time.perf_counter()`` after the GPU's queued work has finished (on a GPU, work runs asynchronously)."""
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def alternate(script: str, args: list[str], sides: tuple[str, ...], repeats: int) -> dict[str, list[dict]]:
    """Run ``script --side S`` for every side, ``repeats`` times in alternation (a change of machine load hits every
    side alike); each run prints one ``RESULT {json}`` line."""
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(repeats):
        for side in sides if r % 2 == 0 else sides[::-1]:
            out = subprocess.run([sys.executable, script, *args, "--side", side], capture_output=True, text=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{side} failed:\n{out.stderr[-4000:]}")
            runs[side].append(json.loads(line[len("RESULT ") :]))
            print(f"  {side} run {r + 1}: {json.dumps(runs[side][-1]['summary'])}", flush=True)
    return runs


def summary(runs: list[dict], key: str) -> tuple[float, float, float]:
    """Median, min and max of ``key`` over runs."""
    values = [r["summary"][key] for r in runs]
    return statistics.median(values), min(values), max(values)


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _source_at_start() -> dict | None:
    from ltune.run_record import source_commit

    return source_commit()


# when the script began, and ltune's tree then: a record the script overwrites (or wrote earlier) does not dirty it
STARTED = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average": os.getloadavg(), "ltune": _source_at_start()}


def provenance() -> dict:
    """What a benchmark record holds besides its figures: the command, ltune's commit (when the script started), the
    stack's versions, the machine, and the load average when the script started and now."""
    from ltune.versions import machine, stack_versions

    return {
        "command": [Path(sys.argv[0]).as_posix(), *sys.argv[1:]],
        "started": STARTED["time"],
        "ltune": STARTED["ltune"],
        "versions": stack_versions(),
        "machine": machine(),
        "load_average": {"start": STARTED["load_average"], "end": os.getloadavg()},
    }


def status_mb(field: str = "VmRSS", pid: int | str = "self") -> float:
    """A memory field of a process's Linux ``/proc/<pid>/status`` in MB: ``VmRSS`` (resident now), ``VmHWM`` (its
    high-water mark)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:")) / 1024


def rss_mb() -> float:
    """Resident set size of this process now, in MB."""
    return status_mb()


class Phases:
    """Wall time per named phase, summed over the timed steps (wrap callables or use ``with phases("name")``), and
    the largest resident set size seen at the end of each phase (``rss``: where the memory goes)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.rss: dict[str, float] = defaultdict(float)
        self.on = False

    def mark(self, name: str) -> None:
        self.rss[name] = max(self.rss[name], rss_mb())

    @contextmanager
    def __call__(self, name: str):
        t = now()
        try:
            yield
        finally:
            self.mark(f"after {name}")
            if self.on:
                self.total[name] += now() - t

    def wrap(self, obj, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)

        setattr(obj, attr, timed)


def lightning_clock(phases: Phases, warmup: int, on_start=None):
    """A Lightning callback recording each step's ``(start, end)`` in ``.steps`` and the backward and optimizer phases
    of the steps after ``warmup``; ``on_start(batch)`` runs at every step start."""
    import lightning as L

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.steps: list[tuple[float, float]] = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            phases.mark("step start")
            phases.on = len(self.steps) >= warmup
            if on_start is not None:
                on_start(batch)
            self.t = now()

        def on_before_backward(self, *args) -> None:
            self.b = now()

        def on_after_backward(self, *args) -> None:
            phases.mark("after backward")
            phases.total["backward"] += (now() - self.b) if phases.on else 0.0

        def on_before_optimizer_step(self, *args) -> None:
            self.o = now()

        def on_train_batch_end(self, *args) -> None:
            end = now()
            phases.mark("after optimizer")
            phases.total["optimizer"] += (end - self.o) if phases.on else 0.0
            self.steps.append((self.t, end))

    return Clock()
