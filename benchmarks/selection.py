"""Speed of the selection strategies' hot paths (issue 6), against their anchors:

* k-center greedy (MoDS): seconds per centre vs the memory-bandwidth floor (bytes of X read per iteration over a
  copy bandwidth measured here); target within 2x of the floor.
* Repr Filter (DEITA): rows/s of the exact batched filter over an N x 384 pool.
* IFD scoring: examples/s of the batched, length-sorted scorer vs a one-example-at-a-time loop; target >= 5x.
* LESS gradient features: examples/s of the batched per-example gradients vs one backward per example; target >= 5x.

    python benchmarks/selection.py                       # issue sizes (200k x 768 k-center, 200k x 384 filter)
    python benchmarks/selection.py --n 50000 --k 100     # smaller, for a CPU
    python benchmarks/selection.py --n 2000 --k 10 --filter_budget 100 --rows 8 --batch_size 4   # smoke, ~15 s
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ltune.backbone import Backbone, LoRA, Tiny
from ltune.datamodules import EmbeddedTasks, InstructionData
from ltune.datamodules.batching import pad_right
from ltune.datamodules.selection.geometry import k_center_greedy, repr_filter
from ltune.datamodules.selection.less import per_example_grads
from ltune.forward import completion_logprobs


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device, nbytes: int = 1 << 29) -> float:
    """Bytes per second moved by a device-to-device copy (read + write counted)."""
    a = torch.empty(nbytes // 4, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    t = time.perf_counter()
    for _ in range(5):
        b.copy_(a)
    sync(device)
    return 2 * nbytes * 5 / (time.perf_counter() - t)


def bench_kcenter(n: int, d: int, k: int, device) -> dict:
    x = torch.randn(n, d, device=device)
    k_center_greedy(x, 3)
    sync(device)
    t = time.perf_counter()
    k_center_greedy(x, k)
    sync(device)
    per_iter = (time.perf_counter() - t) / k
    floor = n * d * 4 / copy_bandwidth(device)  # X is read once per iteration
    return {"n": n, "d": d, "k": k, "s_per_centre": per_iter, "floor_s": floor, "x_floor": per_iter / floor}


def bench_repr_filter(n: int, d: int, k: int, device) -> dict:
    x = torch.randn(n, d, device=device)
    order = torch.randperm(n)
    sync(device)
    t = time.perf_counter()
    kept = repr_filter(x, order, k, 0.9)
    sync(device)
    s = time.perf_counter() - t
    return {"n": n, "d": d, "budget": k, "kept": len(kept), "seconds": s, "rows_per_s": n / s}


def _batches(n: int, device, lora: bool):
    bb = Backbone(tiny=Tiny(), lora=LoRA(r=16, alpha=32, dropout=0.0) if lora else None)
    fmt = InstructionData(max_length=128)
    fmt.tokenizer, fmt._truncated = bb.tokenizer, 0
    enc = [fmt.encode(r) for r in EmbeddedTasks(format="instruction", n=n).rows()]
    enc.sort(key=lambda e: -len(e["input_ids"]))
    model = bb.load_model().to(device).eval()

    def batch(items):
        ids, mask = pad_right([e["input_ids"] for e in items], bb.tokenizer.pad_token_id)
        labels = pad_right([e["labels"] for e in items], -100)[0]
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}

    return model, enc, batch


def bench_ifd(n: int, batch_size: int, device) -> dict:
    model, enc, batch = _batches(n, device, lora=False)

    @torch.inference_mode()
    def run(size):
        sync(device)
        t = time.perf_counter()
        for s in range(0, n, size):
            b = batch(enc[s : s + size])
            completion_logprobs(model, **b)  # the conditioned pass; the answer-alone pass costs the same in both
        sync(device)
        return n / (time.perf_counter() - t)

    run(batch_size)
    batched, loop = run(batch_size), run(1)
    return {"n": n, "batch_size": batch_size, "batched_ex_s": batched, "loop_ex_s": loop, "speedup": batched / loop}


def bench_less(n: int, batch_size: int, device) -> dict:
    model, enc, batch = _batches(n, device, lora=True)
    names = [k for k, p in model.named_parameters() if p.requires_grad]

    def run(size):
        sync(device)
        t = time.perf_counter()
        for s in range(0, n, size):
            b = batch(enc[s : s + size])
            if size == 1:  # the LESS reference: one backward per example
                lp = completion_logprobs(model, **b).logprobs
                loss = -lp.sum() / (b["labels"][:, 1:] != -100).sum()
                params = dict(model.named_parameters())
                torch.autograd.grad(loss, [params[k] for k in names])
            else:
                per_example_grads(model, b, names)
        sync(device)
        return n / (time.perf_counter() - t)

    run(batch_size)
    batched, loop = run(batch_size), run(1)
    return {"n": n, "batch_size": batch_size, "batched_ex_s": batched, "loop_ex_s": loop, "speedup": batched / loop}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="pool rows of the k-center and filter workloads")
    ap.add_argument("--k", type=int, default=1000, help="k-center centres")
    ap.add_argument("--filter_budget", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=256, help="rows of the IFD / LESS workloads")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--only", default="kcenter,filter,ifd,less")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "load": os.getloadavg()[0],
    }
    only = args.only.split(",")
    if "kcenter" in only:
        out["kcenter"] = bench_kcenter(args.n, 768, args.k, device)
    if "filter" in only:
        out["repr_filter"] = bench_repr_filter(args.n, 384, args.filter_budget, device)
    if "ifd" in only:
        out["ifd"] = bench_ifd(args.rows, args.batch_size, device)
    if "less" in only:
        out["less"] = bench_less(args.rows, args.batch_size, device)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
