"""Preference-training throughput: ltune ``ORPO`` (Lightning Trainer) vs TRL's ``ORPOTrainer``
(``trl.experimental.orpo``) on the same tiny model, preference pairs, batch size and step count, on CPU.

    python benchmarks/train_throughput.py                      # tiny preset, 16 pairs per step, 30 steps
    python benchmarks/train_throughput.py --batch 8 --steps 20 --threads 2 --repeats 3   # medians of 3 alternations

Each side runs in its own subprocess, so its peak RSS (``ru_maxrss``, model load included) is its own; both run
in one invocation and the ratio is printed. Tokens/s counts the real (non-padding) tokens of the chosen and rejected
sequences that each side fed to its model, over the steps after the first two (warm-up). Both sides: full
fine-tuning of the same randomly initialised tiny Llama in float32, beta = 0.1, NLL over prompt + response, AdamW
lr 1e-5, no dropout, no gradient checkpointing, no evaluation, no logging or checkpoint writes. The pairs are the
embedded preference rows rendered with the tiny chat template (``Q: ...\\nA: `` + response + EOS) on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _rows(n: int) -> list[dict]:
    from ltune.datamodules import EmbeddedTasks

    return EmbeddedTasks(format="preference", n=n, split="train", seed=0).rows()


def _result(side: str, tokens: list[int], times: list[float]) -> dict:
    timed = slice(2, None)  # warm-up steps excluded
    return {
        "side": side,
        "steps": len(times),
        "tokens_per_s": sum(tokens[timed]) / sum(times[timed]),
        "step_ms": 1000 * sum(times[timed]) / len(times[timed]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_ltune(a: argparse.Namespace) -> dict:
    import lightning as L
    import torch

    from ltune.backbone import Backbone
    from ltune.datamodules import PreferenceData
    from ltune.objectives import ORPO

    torch.manual_seed(0)
    model = ORPO(backbone=Backbone("tiny"), beta=0.1, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-5))
    data = PreferenceData(train=a.data, batch_size=a.batch, max_length=a.max_length, seed=0)
    tokens, times = [], []

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            tokens.append(int(batch["attention_mask"].sum()))
            self.t = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            times.append(time.perf_counter() - self.t)

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=a.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
    )
    trainer.fit(model, data)
    return _result("ltune ORPO", tokens, times)


def run_trl(a: argparse.Namespace) -> dict:
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from ltune.backbone import Backbone

    torch.manual_seed(0)
    backbone = Backbone("tiny")
    model, tok = backbone.load_model(), backbone.tokenizer
    rows = [  # the same text ltune renders; TRL appends EOS to each response itself
        {"prompt": f"Q: {r['prompt']}\nA: ", "chosen": r["chosen"], "rejected": r["rejected"]} for r in _rows(a.rows)
    ]
    args = ORPOConfig(
        output_dir=a.tmp,
        per_device_train_batch_size=a.batch,
        max_steps=a.steps,
        learning_rate=1e-5,
        beta=0.1,
        max_length=a.max_length,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    trainer = ORPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    tokens, times = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.t)

    trainer.add_callback(Clock())
    inner = trainer.concatenated_forward

    def counting_forward(model, batch):
        for side in ("chosen", "rejected"):
            tokens_now = int(batch[f"{side}_attention_mask"].sum())
            counting_forward.n += tokens_now
        return inner(model, batch)

    counting_forward.n = 0

    def step_tokens(*_, **__):
        tokens.append(counting_forward.n)
        counting_forward.n = 0

    trainer.concatenated_forward = counting_forward
    trainer.add_callback(type("Count", (TrainerCallback,), {"on_step_end": step_tokens})())
    trainer.train()
    return _result("TRL ORPOTrainer", tokens, times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="preference pairs per step")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="torch threads per side")
    p.add_argument("--side", choices=["ltune", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=1, help="alternate the two sides this many times; report medians")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args()
    if a.side:
        import torch

        torch.set_num_threads(a.threads)
        print("RESULT " + json.dumps(run_ltune(a) if a.side == "ltune" else run_trl(a)))
        return
    import tempfile

    rows = a.batch * a.steps
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "pairs.jsonl")
        with open(data, "w") as f:
            for r in _rows(rows):
                f.write(json.dumps(r) + "\n")
        runs: dict[str, list[dict]] = {"ltune": [], "trl": []}
        for _ in range(a.repeats):  # alternated, so a change in machine load hits both sides alike
            for side in ("ltune", "trl"):
                cmd = [sys.executable, __file__, "--side", side, "--data", data, "--rows", str(rows), "--tmp", tmp]
                cmd += ["--batch", str(a.batch), "--steps", str(a.steps), "--max-length", str(a.max_length)]
                cmd += ["--threads", str(a.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
                runs[side].append(json.loads(line[len("RESULT ") :]))
    results = [
        {k: (statistics.median(r[k] for r in rs) if k != "side" else rs[0][k]) for k in rs[0]} for rs in runs.values()
    ]
    for r in results:
        print(
            f"{r['side']:16s} {r['tokens_per_s']:9.0f} tokens/s  {r['step_ms']:8.1f} ms/step  "
            f"peak RSS {r['peak_rss_mb']:7.0f} MB"
        )
    ours, theirs = results
    ratio = {
        "tokens_per_s_ratio": ours["tokens_per_s"] / theirs["tokens_per_s"],
        "peak_rss_ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
    }
    print(f"ltune / TRL: {ratio['tokens_per_s_ratio']:.2f}x tokens/s, {ratio['peak_rss_ratio']:.2f}x peak RSS")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "results": results, "runs": runs, **ratio}, f, indent=2)


if __name__ == "__main__":
    main()
