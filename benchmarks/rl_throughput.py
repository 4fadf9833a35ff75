"""RL step throughput: an ltune GRPO/TTRL step vs TRL's ``GRPOTrainer`` on the same tiny model, prompts, G and
max new tokens (CPU by default). Each side runs in its own subprocess so its peak RSS is its own; both run in one
invocation and the ratio is printed.

    python benchmarks/rl_throughput.py                                  # tiny preset, 8 prompts x G=8, 32 new tokens
    python benchmarks/rl_throughput.py --objective ttrl --steps 6 --model runs/sft/hf

Completions/s counts the completions that enter the update (prompts x G) per second of wall time, over the steps after
the first (warm-up). Both sides: full fine-tuning, float32, beta = 0 (no reference), one optimizer step per
generation (on-policy), loss_type dapo, temperature 1, no gradient checkpointing, AdamW lr 1e-5.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _prompts(n: int) -> list[dict]:
    from ltune.datamodules import EmbeddedTasks

    return EmbeddedTasks(format="prompts", n=n, split="train", seed=0).rows()


def _backbone(model: str):
    from ltune.backbone import Backbone

    return Backbone(name_or_path=model)


def run_ltune(a: argparse.Namespace) -> dict:
    import lightning as L
    import torch

    from ltune.datamodules import EmbeddedTasks, PromptData
    from ltune.objectives import GRPO, TTRL

    torch.manual_seed(0)
    common = dict(
        backbone=_backbone(a.model),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-5),
        num_generations=a.generations,
        max_completion_length=a.max_new_tokens,
        temperature=1.0,
        loss_type="dapo",
        beta=0.0,
    )
    model = TTRL(num_votes=a.generations, **common) if a.objective == "ttrl" else GRPO(**common)
    rows = EmbeddedTasks(format="prompts", n=a.prompts * a.steps, split="train", seed=0)  # the prompts TRL gets
    data = PromptData(train=rows, batch_size=a.prompts, max_length=128)
    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, *args) -> None:
            times.append(time.perf_counter())

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=a.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Clock()],
    )
    trainer.fit(model, data)
    return _result(times, a)


def run_trl(a: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ltune.rewards import verifier_reward

    torch.manual_seed(0)
    bb = _backbone(a.model)
    tok = bb.tokenizer
    rows = _prompts(a.prompts * a.steps)
    render = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                      add_generation_prompt=True) for r in rows]  # fmt: skip
    dataset = Dataset.from_list([{"prompt": p, "answer": r["answer"]} for p, r in zip(render, rows)])

    def reward(completions, answer, **kwargs):
        return verifier_reward(completions, answer)

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            times.append(time.perf_counter())

    config = GRPOConfig(
        output_dir=a.trl_output,
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=a.prompts * a.generations,  # TRL counts completions
        num_generations=a.generations,
        max_completion_length=a.max_new_tokens,
        temperature=1.0,
        beta=0.0,
        loss_type="dapo",
        learning_rate=1e-5,
        max_steps=a.steps,
        gradient_checkpointing=False,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        shuffle_dataset=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=bb.load_model(), reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tok,
        callbacks=[Clock()],
    )  # fmt: skip
    trainer.train()
    return _result(times, a)


def _result(times: list[float], a: argparse.Namespace) -> dict:
    steps = len(times) - 1
    seconds = times[-1] - times[0]
    return {
        "completions_per_s": steps * a.prompts * a.generations / seconds,
        "s_per_step": seconds / steps,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="'tiny' or a Hugging Face folder / id")
    p.add_argument("--objective", choices=["grpo", "ttrl"], default="grpo")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--generations", type=int, default=8, help="G, completions per prompt")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="optimizer steps (the first is warm-up)")
    p.add_argument("--trl_output", default="/tmp/ltune_trl_bench")
    p.add_argument("--side", choices=["ltune", "trl"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        print(json.dumps((run_ltune if a.side == "ltune" else run_trl)(a)))
        return
    results = {}
    for side in ("ltune", "trl"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side], capture_output=True, text=True)
        if out.returncode:
            print(f"{side} failed:\n{out.stderr[-3000:]}")
            results[side] = None
            continue
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"load average at the end: {os.getloadavg()}")
    print(f"{'side':6s} {'completions/s':>14s} {'s/step':>8s} {'peak RSS MiB':>13s}")
    for side, r in results.items():
        if r:
            print(f"{side:6s} {r['completions_per_s']:14.2f} {r['s_per_step']:8.2f} {r['peak_rss_mib']:13.0f}")
    if results.get("ltune") and results.get("trl"):
        ratio = results["ltune"]["completions_per_s"] / results["trl"]["completions_per_s"]
        print(f"ltune / TRL throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
