r"""Memory against length: the peak resident memory of training steps at 512 to 8,000 tokens, above the static part
(weights, gradients, optimizer state, the runtime), ltune vs TRL at its best settings, for SFT, DPO and ORPO.

Each length gets rows of about that many tokens (``benchmarks/workload.py --exact``: an SFT row, or a pair's prompt
and longer response) and runs ``train_throughput.py`` on them: two steps of one row (pair), full fine-tuning, each
side in its own process, TRL with packing and ``padding_free`` (SFT) or ``precompute_ref_log_probs`` (DPO, as ltune's
cached reference). A side's *step memory* at a length is its peak RSS there minus its peak RSS at ``--base`` tokens,
where activations are negligible: what one step adds on top of the static part. A side whose run dies (e.g. killed
out of memory) is recorded as failed, with its exit status and the highest resident memory seen from outside while
it lived (``peak_rss_mb_at_least``, sampled every 50 ms), and the other side's figures kept; where TRL's side died,
``ratio_at_most`` bounds ltune / TRL from above. ``--checkpointing [L]`` adds runs at length ``L`` (default: the
longest) with activation checkpointing on (both sides). The records keep each run's tokens/s too, worth reading only
when nothing else ran beside the benchmark.

    python benchmarks/memory_lengths.py --out benchmarks/results/lengths/memory --checkpointing
    python benchmarks/memory_lengths.py --methods sft --lengths 512 1024 2048 4096 6144 8000 --checkpointing 4096 \
        --out benchmarks/results/lengths/memory   # on past the logits chunk (4,096 positions)
    python benchmarks/memory_lengths.py --methods orpo --lengths 128 --base 64 --out /tmp/m             # smoke

Writes one record per method (``<out>/<method>.json``: peaks, step memory, the slope in MB per 1,000 tokens between
lengths, ltune / TRL at each length) and ``<out>/memory.png``: step memory against tokens, a line per method and side
of every record in ``<out>``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _common import provenance, status_mb  # noqa: E402


def watched(cmd: list[str], every: float = 0.05) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` and sample its resident high-water mark (Linux ``VmHWM``) every ``every`` seconds while it lives:
    a lower bound on the peak of a process that is killed (out of memory) before it can report its own."""
    import time

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        seen = 0.0
        while proc.poll() is None:
            try:
                seen = max(seen, status_mb("VmHWM", proc.pid))
            except (OSError, StopIteration):  # exited between poll() and open(), or a zombie without memory lines
                pass
            time.sleep(every)
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read()), seen


def _run(method: str, tokens: int, model: str, tmp: Path, checkpointing: bool = False) -> dict:
    """One ``train_throughput.py`` invocation on two rows (pairs) of about ``tokens`` tokens: both sides' results."""
    import workload

    kind = "sft" if method == "sft" else "pairs"
    rows = tmp / f"{kind}{tokens}.jsonl"
    if not rows.exists():
        cap = ["--max-tokens", str(max(tokens, 4096))]  # the workload's default cap, raised for longer rows
        workload.main([kind, "--rows", "2", "--exact", str(tokens), *cap, "--model", model, "--out", str(rows)])
    cmd = [sys.executable, str(HERE / "train_throughput.py"), "--method", method, "--model", model]
    cmd += ["--workload", str(rows), "--data", str(rows), "--tmp", str(tmp), "--batch", "1"]
    cmd += ["--max-length", str(tokens + 64), "--warmup", "1"]
    cmd += {"sft": ["--trl-packing"], "dpo": ["--precompute"], "orpo": []}[method]
    cmd += ["--gradient-checkpointing"] if checkpointing else []
    sides = {}
    for side in ("ltune", "trl"):  # each side in its own process; one that dies (killed out of memory) is recorded
        done, seen = watched([*cmd, "--side", side])
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sides[side] = {
                "peak_rss_mb": None,
                "peak_rss_mb_at_least": seen,
                "failed": f"exit status {done.returncode}: {done.stderr[-300:]}",
            }
            print(f"{method} {tokens} {side}: failed, exit status {done.returncode}, at {seen:.0f} MB", flush=True)
            continue
        run = json.loads(line[len("RESULT ") :])
        sides[side] = {
            "peak_rss_mb": run["summary"]["peak_rss_mb"],
            "tokens_per_s": run["summary"]["tokens_per_s"],
            "tokens_per_step": max(run["tokens_per_step"]),
        }
    return {"tokens": tokens, "workload": json.loads(rows.with_suffix(".summary.json").read_text()), **sides}


def above(peak: float | None, base: float | None) -> float | None:
    """A peak above the base run's, None where a side's run failed."""
    return None if peak is None or base is None else peak - base


def summarise(method: str, base: dict, runs: list[dict]) -> dict:
    """Step memory (MB above the base run's peak) per side and length, its slope per 1,000 tokens between lengths,
    and ltune / TRL at each length."""
    out = {"method": method, "base": base, "runs": runs, "lengths": [r["tokens"] for r in runs]}
    step = {s: [above(r[s]["peak_rss_mb"], base[s]["peak_rss_mb"]) for r in runs] for s in ("ltune", "trl")}
    out["step_memory_mb"] = step
    out["slope_mb_per_1k_tokens"] = {
        s: [
            1000 * (b - a) / (n2 - n1) if None not in (a, b) else None
            for a, b, n1, n2 in zip(v, v[1:], out["lengths"], out["lengths"][1:])
        ]
        for s, v in step.items()
    }
    out["ratio"] = [lt / tr if lt is not None and tr else None for lt, tr in zip(step["ltune"], step["trl"])]
    # a TRL step killed before it could report: its high-water mark seen from outside bounds its step memory below,
    # and so the ratio above
    least = [above(r["trl"].get("peak_rss_mb_at_least"), base["trl"]["peak_rss_mb"]) for r in runs]
    out["ratio_at_most"] = [lt / tr if lt is not None and tr else None for lt, tr in zip(step["ltune"], least)]
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in results:
        for side, style in (("ltune", "-o"), ("trl", "--s")):
            points = [(n, v / 1024) for n, v in zip(m["lengths"], m["step_memory_mb"][side]) if v is not None]
            ax.plot(*zip(*points), style, label=f"{m['method']} {side}")
    ax.set_xlabel("tokens of the row (pair)")
    ax.set_ylabel("step memory above the static part (GiB)")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["sft", "dpo", "orpo"], choices=["sft", "dpo", "orpo"])
    p.add_argument("--lengths", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    p.add_argument("--base", type=int, default=64, help="the length whose peak stands for the static part")
    p.add_argument("--model", default="smollm2-135m-instruct")
    help = "also this length (default: the longest) with checkpointing on"
    p.add_argument("--checkpointing", type=int, nargs="?", const=0, metavar="L", help=help)
    p.add_argument("--out", required=True, help="folder of the records and the plot")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in a.methods:
            base = _run(method, a.base, a.model, Path(tmp))
            entry = summarise(method, base, [_run(method, n, a.model, Path(tmp)) for n in a.lengths])
            if a.checkpointing is not None:
                gc = _run(method, a.checkpointing or a.lengths[-1], a.model, Path(tmp), checkpointing=True)
                gc["step_memory_mb"] = {
                    s: above(gc[s]["peak_rss_mb"], base[s]["peak_rss_mb"]) for s in ("ltune", "trl")
                }
                entry["checkpointing"] = gc
            entry["args"], entry["provenance"] = vars(a), provenance()
            (out / f"{method}.json").write_text(json.dumps(entry, indent=1) + "\n")
            print(method, json.dumps({k: entry[k] for k in ("step_memory_mb", "ratio")}), flush=True)
            results.append(entry)
    plot([json.loads(f.read_text()) for f in sorted(out.glob("*.json"))], out / "memory.png")  # every method's
    return results


if __name__ == "__main__":
    main()
