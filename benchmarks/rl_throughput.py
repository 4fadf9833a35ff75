"""RL step throughput: an ltune GRPO/TTRL step vs TRL's ``GRPOTrainer`` on the same model, prompts (rendered by
the same chat template), G and max new tokens (CPU by default). Each side runs in its own subprocess so its peak RSS
is its own; sides alternate over ``--repeats`` in one invocation; medians, spread and the ratio are printed.

    python benchmarks/rl_throughput.py --model smollm2-135m-instruct --prompts 4 --generations 4 --max_new_tokens 32
    python benchmarks/rl_throughput.py --model smollm2-135m-instruct --lora 16 --prompts 8 --generations 8 \
        --max_new_tokens 64
    python benchmarks/rl_throughput.py --model tiny --objective ttrl --steps 6        # framework overhead
    python benchmarks/rl_throughput.py --model tiny --objective ttrl --prompts 2 --generations 2 --max_new_tokens 8 \
        --steps 2 --repeats 1                                                           # smoke, ~30 s
    python benchmarks/workload.py prompts --rows 16 --out /tmp/prompts.jsonl        # prompts of 100-1,000 tokens:
    python benchmarks/rl_throughput.py --workload /tmp/prompts.jsonl --prompts 2 --generations 4 --max_new_tokens 128 \
        --sampler continuous --trl_continuous     # both sides decode with transformers' continuous batching

With ``--workload`` the prompts are the file's rows (rendered by the same chat template on both sides) and the
reward is the same on both sides: minus the completion's length in characters over 100 (it varies within a group,
so every group has advantages and an update).

Completions/s counts the completions that enter the update (prompts x G) per second of wall time, over the steps after
the first (warm-up). Both sides: full fine-tuning or LoRA (``--lora r``, all linear layers), float32, beta = 0 (no
reference), one optimizer step per generation (on-policy), loss_type dapo, temperature 1, no gradient
checkpointing, fused AdamW lr 1e-5 (TRL's default). The compute floor of a step: 2N FLOPs per prompt and generated
token (sampling) + kN per token of the update (k = 6 full, 4 LoRA), real tokens only, at the machine's measured
float32 matmul rate; phases: generation, reward, update forward, backward, optimizer, rest.

ltune shares each prompt across its G samples (its defaults): one prefill per prompt in generation
(``HFSampler.share_prefill``) and one packed sequence per prompt in the update (``GRPO.share_prompt``);
``--no_share`` turns both off. Completions/s and the compute floor count the work as TRL's side does it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import Phases, alternate, lightning_clock, load_average, matmul_gflops, provenance, summary  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _prompts(n: int, workload: str | None = None) -> list[dict]:
    from ltune.datamodules import EmbeddedTasks

    if workload:
        return [json.loads(line) for line in open(workload)][:n]
    return EmbeddedTasks(format="prompts", n=n, split="train", seed=0).rows()


def _blocks(tok, prompts: list[str], a: argparse.Namespace) -> int:
    """TRL's KV blocks for one step's requests, sized as ltune's ContinuousSampler sizes its cache (TRL otherwise
    sizes it from half of the free memory, which on a CPU is half of the machine's RAM)."""
    from ltune.continuous import kv_blocks

    longest = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    return kv_blocks([longest] * a.prompts, a.max_new_tokens, a.generations)


def brevity(completions: list[str], **kwargs) -> list[float]:
    """The workload's reward on both sides: minus the length in characters over 100."""
    return [-len(c) / 100 for c in completions]


def _backbone(model: str, lora: int = 0):
    from ltune.backbone import Backbone, LoRA

    return Backbone(name_or_path=model, lora=LoRA(r=lora, alpha=2 * lora, dropout=0.0) if lora else None)


def run_ltune(a: argparse.Namespace) -> dict:
    import lightning as L
    import torch

    from ltune.datamodules import EmbeddedTasks, PromptData
    from ltune.generation import HFSampler
    from ltune.objectives import GRPO, TTRL

    torch.manual_seed(0)
    common = dict(
        backbone=_backbone(a.model, a.lora),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-5, fused=True),
        num_generations=a.generations,
        max_completion_length=a.max_new_tokens,
        temperature=1.0,
        loss_type="dapo",
        beta=0.0,
        share_prompt=not a.no_share,
    )
    if a.workload:
        common["reward_funcs"] = [brevity]
    model = TTRL(num_votes=a.generations, **common) if a.objective == "ttrl" else GRPO(**common)
    model.sampler = HFSampler(share_prefill=not a.no_share)
    if a.sampler == "continuous":
        from ltune.continuous import ContinuousSampler

        model.sampler = ContinuousSampler()
    rows = a.workload or EmbeddedTasks(format="prompts", n=a.prompts * a.steps, split="train", seed=0)  # as TRL's
    data = PromptData(train=rows, batch_size=a.prompts, max_length=4096, seed=0)
    phases, tokens = Phases(), {"sampled": 0, "update": 0}
    rollout = model.rollout

    def counted_rollout(batch):
        with phases("generate"):
            samples = rollout(batch)
        if phases.on:
            real = int(samples.prompt_mask.sum()), int(samples.completion_mask.sum())
            tokens["sampled"] += sum(real)
            g = a.generations / model.num_rollouts  # the share of sampled rows that enter the update
            tokens["update"] += int(g * sum(real))
        return samples

    model.rollout = counted_rollout
    phases.wrap(model, "rewards", "reward")
    phases.wrap(model, "update_loss", "update forward")

    clock = lightning_clock(phases, 1)

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=a.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(model, data)
    times = [end for _, end in clock.steps]
    return _result(times, a, phases, tokens, sum(p.numel() for p in model.model.parameters()))


def run_trl(a: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ltune.rewards import verifier_reward

    torch.manual_seed(0)
    bb = _backbone(a.model)
    tok = bb.tokenizer
    rows = _prompts(a.prompts * a.steps, a.workload)
    render = [
        tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False, add_generation_prompt=True)
        for r in rows
    ]
    dataset = Dataset.from_list([{"prompt": p, "answer": r.get("answer", "")} for p, r in zip(render, rows)])

    def reward(completions, answer, **kwargs):
        return brevity(completions) if a.workload else verifier_reward(completions, answer)

    times, phases, tokens = [], Phases(), {"sampled": 0, "update": 0}

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            phases.mark("step start")
            phases.on = len(times) >= 1

        def on_pre_optimizer_step(self, *args, **kwargs):
            self.o = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            now = time.perf_counter()
            phases.mark("after optimizer")
            phases.total["optimizer"] += (now - self.o) if phases.on else 0.0
            times.append(now)

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
        optim="adamw_torch_fused",
        weight_decay=0.01,  # torch's AdamW default, as on the ltune side
        max_steps=a.steps,
        gradient_checkpointing=False,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        shuffle_dataset=False,
        seed=0,
        use_transformers_continuous_batching=a.trl_continuous,
        transformers_continuous_batching_config={"num_blocks": _blocks(tok, render, a)} if a.trl_continuous else None,
    )
    peft = None
    if a.lora:
        from peft import LoraConfig

        peft = LoraConfig(
            r=a.lora, lora_alpha=2 * a.lora, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    trainer = GRPOTrainer(
        model=bb.load_model(),
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[Clock()],
        peft_config=peft,
    )
    generate = trainer._generate_and_score_completions

    def counted_generate(inputs):
        with phases("generate + reward"):
            out = generate(inputs)
        if phases.on:
            real = int(out["prompt_mask"].sum()) + int(out["completion_mask"].sum())
            tokens["sampled"] += real
            tokens["update"] += real
        return out

    trainer._generate_and_score_completions = counted_generate
    phases.wrap(trainer, "compute_loss", "update forward")
    phases.wrap(trainer.accelerator, "backward", "backward")
    trainer.train()
    return _result(times, a, phases, tokens, sum(p.numel() for p in trainer.model.parameters()))


def _result(times: list[float], a: argparse.Namespace, phases: Phases, tokens: dict, n_params: int) -> dict:
    steps = len(times) - 1
    seconds = times[-1] - times[0]
    flops = 2 * n_params * tokens["sampled"] + (4 if a.lora else 6) * n_params * tokens["update"]
    return {
        "summary": {
            "completions_per_s": steps * a.prompts * a.generations / seconds,
            "s_per_step": seconds / steps,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "gflops": flops / seconds / 1e9,
        },
        "tokens": tokens,
        "phases": {k: v / seconds for k, v in phases.total.items()},
        "rss_mb": dict(phases.rss),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="'tiny', a preset, or a Hugging Face folder / id")
    p.add_argument("--objective", choices=["grpo", "ttrl"], default="grpo")
    p.add_argument("--lora", type=int, default=0, help="LoRA rank (all linear layers, alpha = 2r); 0 = full FT")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--generations", type=int, default=8, help="G, completions per prompt")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument(
        "--no_share",
        action="store_true",
        help="ltune prefills every sample's prompt and scores the B x G rows as they are (its prompt "
        "sharing in generation and update off)",
    )
    p.add_argument("--workload", help="a jsonl of prompt rows (benchmarks/workload.py prompts); reward: brevity")
    p.add_argument("--sampler", choices=["generate", "continuous"], default="generate", help="ltune's sampler")
    p.add_argument("--trl_continuous", action="store_true", help="TRL: use_transformers_continuous_batching")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps (the first is warm-up)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per side")
    p.add_argument("--repeats", type=int, default=2, help="runs per side, alternated; medians reported")
    p.add_argument("--trl_output", default="/tmp/ltune_trl_bench")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--side", choices=["ltune", "trl"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        import torch

        torch.set_num_threads(a.threads)
        print("RESULT " + json.dumps((run_ltune if a.side == "ltune" else run_trl)(a)))
        return
    peak = matmul_gflops(a.threads)
    tuning = (f"LoRA r={a.lora}" if a.lora else "full FT") + f"; ltune samples with {a.sampler}"
    tuning += ", TRL with continuous batching" if a.trl_continuous else ", TRL with generate"
    print(
        f"{a.objective} {a.model} {tuning}; {a.prompts} prompts x G {a.generations}, {a.max_new_tokens} new tokens, "
        f"{a.steps} steps (1 warm-up), {a.threads} threads; float32 matmul {peak:.0f} GFLOP/s; {load_average()}"
    )
    args = [
        f"--{k}" if v is True else f"--{k}={v}"
        for k, v in vars(a).items()
        if k not in ("json", "side") and v is not False and v is not None
    ]
    runs = alternate(__file__, args, ("ltune", "trl"), a.repeats)
    print(f"{'side':6s} {'completions/s (min-max)':>26s} {'s/step':>7s} {'peak RSS MiB':>13s} {'of floor':>9s}  phases")
    for side, rs in runs.items():
        cps, lo, hi = summary(rs, "completions_per_s")
        sps, rss, gf = (summary(rs, k)[0] for k in ("s_per_step", "peak_rss_mib", "gflops"))
        ph = " ".join(f"{k} {v:.0%}" for k, v in rs[0]["phases"].items())
        print(f"{side:6s} {cps:12.2f} ({lo:5.2f}-{hi:5.2f})   {sps:7.2f} {rss:13.0f} {gf / peak:9.1%}  {ph}")
    ratio = summary(runs["ltune"], "completions_per_s")[0] / summary(runs["trl"], "completions_per_s")[0]
    rss = summary(runs["ltune"], "peak_rss_mib")[0] / summary(runs["trl"], "peak_rss_mib")[0]
    print(f"ltune / TRL: {ratio:.2f}x completions/s, {rss:.2f}x peak RSS; {load_average()}")
    if a.json:
        with open(a.json, "w") as f:
            record = {"args": vars(a), "matmul_gflops": peak, "runs": runs, "ratio": ratio, "rss_ratio": rss}
            summary_file = os.path.splitext(a.workload)[0] + ".summary.json" if a.workload else None
            if summary_file and os.path.exists(summary_file):  # the workload's lengths, from benchmarks/workload.py
                record["workload"] = json.load(open(summary_file))
            json.dump({**record, "provenance": provenance()}, f)


if __name__ == "__main__":
    main()
