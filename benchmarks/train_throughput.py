"""Training throughput side by side: ltune ``SFT`` / ``ORPO`` / ``DPO`` / ``KTO`` (Lightning) vs TRL's ``SFTTrainer``
(default loss) / ``ORPOTrainer`` (``trl.experimental.orpo``) / ``DPOTrainer`` (sigmoid, beta 0.1) / ``KTOTrainer`` (kto,
beta 0.1) on the same model, rows,
rendered token ids, batch, lengths, precision (float32) and optimizer (fused AdamW lr 1e-5, constant: TRL's default),
full fine-tuning or LoRA; each side in its own process, sides alternated over ``--repeats``.

    python benchmarks/train_throughput.py --method orpo --model smollm2-135m-instruct --repeats 3
    python benchmarks/train_throughput.py --method sft --lora 16 --model smollm2-135m-instruct --repeats 3
    python benchmarks/train_throughput.py --method orpo --model tiny --batch 8 --steps 8     # framework overhead
    python benchmarks/train_throughput.py --method orpo --model tiny --batch 2 --steps 3 --warmup 1 --repeats 1  # smoke
    python benchmarks/train_throughput.py --method dpo --lora 16 --precompute --repeats 3   # both sides cache the
                                                                                           # reference log-probs
    python benchmarks/workload.py sft --rows 64 --out /tmp/sft.jsonl                      # rows of real lengths:
    python benchmarks/train_throughput.py --method sft --workload /tmp/sft.jsonl --max-length 4096 --warmup 1 \
        --trl-packing --batch-tokens 4096   # one pass over them; TRL packs (BFD), padding-free; ltune steps on the
                                            # same bins of <= 4,096 tokens (its batch_tokens)

Gradient checkpointing is the same on both sides: off unless ``--gradient-checkpointing`` (TRL's SFT/ORPO/DPO configs
default to on, ltune's ``Backbone`` to off; figures before 2026-11-30 20:30 left TRL's default on, see RESULTS).

DPO's and KTO's reference: with LoRA the adapter-disabled policy, in full FT a frozen copy, on both sides;
``--precompute`` computes every row's reference log-probs before the first step on both sides (ltune's
``precompute_ref_log_probs``, TRL's), so the steps run one model; that pass is outside the timed steps on both sides
and reported as ``precompute_s`` (ltune: ``on_fit_start``; TRL: the trainer's construction).

Rows: the embedded preference (ORPO) or instruction (SFT) rows, rendered once by ltune's DataModule (the model's chat
template); TRL gets the same prompt text and completion text (it appends the same EOS), so both sides tokenize to the
same ids: each side reports the real (non-padding) tokens it fed over the whole run, and the totals must agree.
Tokens/s counts those tokens over the steps after ``--warmup``. The compute floor is ``k N`` FLOPs per token (k = 6
for full fine-tuning, 4 for LoRA: no weight gradients of frozen weights; N = parameters, tied embeddings once;
attention scores left out, small at these lengths) at the machine's measured float32 matmul rate. Phases: forward
(loss included), backward, optimizer, and the rest of the step (data, framework).

KTO: the preference pairs unpaired on both sides (ltune's ``UnpairedPreferenceData``, TRL's
``unpair_preference_dataset``, put in ltune's shuffled order: TRL samples sequentially, so both sides' steps hold the
same rows and the untimed warm-up step is the same on both), ``--batch`` rows a step, each with
its KL sequence (its prompt and another row's completion: TRL rotates completions within a batch, ltune pairs rows by a
seeded cycle); tokens count the rows and the KL sequences on both sides. TRL's KL estimate needs a batch of >= 2 rows.

ORPO/DPO pairs: ltune runs each pair's chosen and rejected rows as one sequence around their shared prefix (its
default, ``ltune.packing``; ``--no-share-prompt`` turns it off). Tokens/s still counts the pairs' tokens as TRL's
side does (the same work), not the fewer tokens ltune's decoder runs, and so does the "of peak" share.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from _common import (  # noqa: E402
    Phases,
    alternate,
    lightning_clock,
    load_average,
    matmul_gflops,
    now,
    provenance,
    summary,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _data(a: argparse.Namespace):
    from ltune.datamodules import InstructionData, PreferenceData, UnpairedPreferenceData

    cls = {"sft": InstructionData, "kto": UnpairedPreferenceData}.get(a.method, PreferenceData)
    return cls(train=a.data, batch_size=a.batch, batch_tokens=a.batch_tokens, max_length=a.max_length, seed=0)


def _backbone(a: argparse.Namespace):
    from ltune.backbone import Backbone, LoRA

    lora = LoRA(r=a.lora, alpha=2 * a.lora, dropout=0.0) if a.lora else None
    return Backbone(a.model, dtype=a.dtype, lora=lora, gradient_checkpointing=a.gradient_checkpointing)


def _result(a, tokens: list[int], times: list[float], phases: Phases, n_params: int, precompute_s=None) -> dict:
    import torch

    timed = slice(a.warmup, None)
    seconds, toks = sum(times[timed]), sum(tokens[timed])
    flops = (4 if a.lora else 6) * n_params * toks
    gpu = {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if a.device == "cuda" else {}
    return {
        "summary": {
            "tokens_per_s": toks / seconds,
            "step_ms": 1000 * seconds / len(times[timed]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "gflops": flops / seconds / 1e9,
            **gpu,
        },
        "tokens_total": sum(tokens),
        "tokens_per_step": tokens,  # a step's size: peak memory follows the largest
        "precompute_s": precompute_s,
        "phases": {k: v / seconds for k, v in phases.total.items()},
        "rss_mb": dict(phases.rss),
    }


def run_ltune(a: argparse.Namespace) -> dict:
    import lightning as L
    import torch

    from ltune.objectives import DPO, KTO, ORPO, SFT

    torch.manual_seed(0)
    opt = lambda p: torch.optim.AdamW(p, lr=1e-5, fused=True)  # noqa: E731
    share = not a.no_share_prompt
    if a.method == "orpo":
        model = ORPO(backbone=_backbone(a), beta=0.1, optimizer=opt, share_prompt=share)
    elif a.method in ("dpo", "kto"):
        model = (DPO if a.method == "dpo" else KTO)(
            backbone=_backbone(a),
            beta=0.1,
            optimizer=opt,
            precompute_ref_log_probs=a.precompute,
            cache_dir=os.path.join(a.tmp, "ltune_ref_cache"),
            share_prompt=share,
        )
    else:
        model = SFT(backbone=_backbone(a), optimizer=opt)
    tokens, phases = [], Phases()  # ORPO: chosen and rejected rows of one batch share its attention mask
    phases.wrap(model, "training_step", "forward")
    precompute = []
    if a.method in ("dpo", "kto"):
        inner = model.on_fit_start

        def on_fit_start():
            t = now()
            inner()
            precompute.append(now() - t)

        model.on_fit_start = on_fit_start

    keys = ("attention_mask", "KL_attention_mask")  # KTO: the rows and their KL sequences
    clock = lightning_clock(
        phases, a.warmup, lambda batch: tokens.append(sum(int(batch[k].sum()) for k in keys if k in batch))
    )
    trainer = L.Trainer(
        accelerator="gpu" if a.device == "cuda" else "cpu",
        devices=1,
        max_steps=-1 if a.workload else a.steps,  # a workload: one pass over all its rows, as TRL's side
        max_epochs=1 if a.workload else None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(model, _data(a))
    times = [end - start for start, end in clock.steps]
    n_params = sum(p.numel() for p in model.model.parameters())
    return _result(a, tokens, times, phases, n_params, precompute[0] if a.precompute else None)


def run_trl(a: argparse.Namespace) -> dict:
    import datasets
    import torch
    from transformers import TrainerCallback

    torch.manual_seed(0)
    dm, bb = _data(a), _backbone(a)
    dm.tokenizer = tok = bb.tokenizer
    rows = [json.loads(line) for line in open(a.data)]
    eos = tok.eos_token

    def split(prompt: str, completion: str) -> tuple[str, str]:
        ptext, ctext = dm.render(prompt, completion)  # ltune's text; TRL appends the EOS itself
        return ptext, ctext.removesuffix(eos)

    common = dict(
        output_dir=a.tmp,
        per_device_train_batch_size=a.batch,
        max_steps=-1 if a.workload else a.steps,
        num_train_epochs=1,
        learning_rate=1e-5,
        max_length=a.max_length,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        use_cpu=a.device == "cpu",
        bf16=a.dtype == "bfloat16",  # the weights are loaded in it too, as ltune's
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        optim="adamw_torch_fused",
        gradient_checkpointing=a.gradient_checkpointing,
    )
    peft = None
    if a.lora:
        from peft import LoraConfig

        peft = LoraConfig(
            r=a.lora, lora_alpha=2 * a.lora, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    model = bb.__class__(a.model, dtype=a.dtype).load_model()  # without LoRA or checkpointing: the trainer adds its own
    precompute_s = None
    pairs = []  # preference rows rendered by ltune, EOS left to TRL
    for r in rows if a.method != "sft" else []:
        p, c = split(r["prompt"], r["chosen"])
        pairs.append({"prompt": p, "chosen": c, "rejected": split(r["prompt"], r["rejected"])[1]})
    if a.method in ("dpo", "kto"):
        from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
        from trl.data_utils import unpair_preference_dataset

        data = datasets.Dataset.from_list(pairs)
        if a.method == "kto":  # TRL samples sequentially: the unpaired rows in ltune's order (see the docstring)
            dm.setup("fit")
            order = [dm.data["train"][i] for i in dm.train_dataloader().sampler]
            data = unpair_preference_dataset(data)
            data = data.select([r["pair"] + (0 if r["label"] else len(pairs)) for r in order])  # chosen rows first
            want = [pairs[r["pair"]]["chosen" if r["label"] else "rejected"] for r in order]
            assert data["completion"] == want, "TRL's unpaired rows are not in ltune's order"
        config, trainer_cls = (DPOConfig, DPOTrainer) if a.method == "dpo" else (KTOConfig, KTOTrainer)
        t = now()
        trainer = trainer_cls(
            model=model,
            args=config(beta=0.1, precompute_ref_log_probs=a.precompute, precompute_ref_batch_size=a.batch, **common),
            processing_class=tok,
            train_dataset=data,
            peft_config=peft,
        )
        precompute_s = now() - t if a.precompute else None
        keys = ("attention_mask",) if a.method == "dpo" else ("attention_mask", "KL_attention_mask")
    elif a.method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer = ORPOTrainer(
            model=model,
            args=ORPOConfig(beta=0.1, **common),
            processing_class=tok,
            train_dataset=datasets.Dataset.from_list(pairs),
            peft_config=peft,
        )
        keys = ("chosen_attention_mask", "rejected_attention_mask")
    else:
        from trl import SFTConfig, SFTTrainer

        if "messages" in rows[0]:  # conversational rows: TRL renders them with the same chat template
            data = [{"messages": r["messages"]} for r in rows]
        else:
            data = [dict(zip(("prompt", "completion"), split(r["prompt"], r["response"]))) for r in rows]
        # TRL's BFD packing, padding-free: a step is one packed sequence of up to max_length tokens
        best = {"packing": True, "padding_free": True, "per_device_train_batch_size": 1} if a.trl_packing else {}
        common = {k: v for k, v in common.items() if k not in best}
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**best, **common),
            processing_class=tok,
            train_dataset=datasets.Dataset.from_list(data),
            peft_config=peft,
        )
        keys = ("attention_mask",)
    tokens, times, phases = [], [], Phases()
    inner = trainer.compute_loss

    def compute_loss(model, inputs, *args, **kwargs):
        if any(k in inputs for k in keys):
            tokens[-1] += sum(int(inputs[k].sum()) for k in keys if k in inputs)
        else:  # padding-free: one flat sequence, no mask
            tokens[-1] += int(inputs["input_ids"].numel())
        with phases("forward"):
            return inner(model, inputs, *args, **kwargs)

    trainer.compute_loss = compute_loss
    phases.wrap(trainer.accelerator, "backward", "backward")

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            phases.mark("step start")
            phases.on = len(times) >= a.warmup
            tokens.append(0)
            self.t = now()

        def on_pre_optimizer_step(self, *_, **__):
            self.o = now()

        def on_step_end(self, *_, **__):
            end = now()
            phases.mark("after optimizer")
            phases.total["optimizer"] += (end - self.o) if phases.on else 0.0
            times.append(end - self.t)

    trainer.add_callback(Clock())
    trainer.train()
    n_params = sum(p.numel() for p in trainer.model.parameters())
    return _result(a, tokens, times, phases, n_params, precompute_s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["orpo", "sft", "dpo", "kto"], default="orpo")
    p.add_argument("--model", default="smollm2-135m-instruct", help="'tiny', a preset, or a Hugging Face folder")
    p.add_argument("--lora", type=int, default=0, help="LoRA rank (all linear layers, alpha = 2r); 0 = full FT")
    p.add_argument("--batch", type=int, default=8, help="rows (SFT, KTO) or pairs (ORPO, DPO) per step")
    p.add_argument("--precompute", action="store_true", help="DPO, KTO: reference log-probs computed before the steps")
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="on both sides (TRL's configs default to on, ltune's Backbone to off: set here for both)",
    )
    p.add_argument(
        "--no-share-prompt",
        action="store_true",
        help="ORPO/DPO/KTO: ltune runs the 2B rows as they are (its shared-prefix forward of each pair off)",
    )
    p.add_argument(
        "--workload",
        help="a jsonl of rows in TRL's layout (benchmarks/workload.py): both sides run one pass over all of them",
    )
    p.add_argument("--trl-packing", action="store_true", help="SFT: TRL packs (best-fit-decreasing), padding-free")
    p.add_argument(
        "--batch-tokens",
        type=int,
        help="ltune: a token budget per step (the DataModule's batch_tokens) instead of --batch rows; with "
        "--trl-packing and --max-length equal to it, both sides step on the same best-fit-decreasing bins",
    )
    p.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        help="both sides: glibc's MALLOC_MMAP_THRESHOLD_ (bytes): larger blocks are mapped and go back to the system "
        "when freed (unset: glibc's dynamic threshold, which keeps freed activations in its heap)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="both sides (cuda: one GPU)")
    p.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="weights and compute, both sides"
    )
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=2, help="torch threads per side")
    p.add_argument("--repeats", type=int, default=3, help="runs per side, alternated; medians reported")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--side", choices=["ltune", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        import torch

        torch.set_num_threads(a.threads)
        print("RESULT " + json.dumps(run_ltune(a) if a.side == "ltune" else run_trl(a)))
        return
    from ltune.datamodules import EmbeddedTasks

    peak = matmul_gflops(a.threads, device=a.device, dtype=a.dtype)
    tuning = (f"LoRA r={a.lora}" if a.lora else "full FT") + (", reference precomputed" if a.precompute else "")
    tuning += ", gradient checkpointing" if a.gradient_checkpointing else ", no gradient checkpointing"
    tuning += f", ltune's steps at most {a.batch_tokens} tokens" if a.batch_tokens else ""
    if a.malloc_mmap_threshold:  # read by glibc when each side's process starts
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(a.malloc_mmap_threshold)
        tuning += f", MALLOC_MMAP_THRESHOLD_={a.malloc_mmap_threshold}"
    if a.method != "sft":
        tuning += ", ltune's pairs as 2B rows" if a.no_share_prompt else ", ltune's pairs share their prefix"
    print(
        f"{a.method} {a.model} {tuning}; batch {a.batch}, {a.steps} steps ({a.warmup} warm-up), {a.threads} "
        f"threads; {a.device} {a.dtype} matmul {peak:.0f} GFLOP/s; {load_average()}"
    )
    fmt = "instruction" if a.method == "sft" else "preference"
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.abspath(a.workload) if a.workload else os.path.join(tmp, "rows.jsonl")
        if not a.workload:
            with open(data, "w") as f:
                for r in EmbeddedTasks(format=fmt, n=a.batch * a.steps, split="train", seed=0).rows():
                    f.write(json.dumps(r) + "\n")
        skip = ("json", "side", "data", "tmp", "workload")
        args = [
            f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}")
            for k, v in vars(a).items()
            if k not in skip and v is not False and v is not None
        ]
        args += ["--data", data, "--tmp", tmp] + (["--workload", data] if a.workload else [])
        runs = alternate(__file__, args, ("ltune", "trl"), a.repeats)
    head = f"{'side':6s} {'tokens/s (min-max)':>24s} {'ms/step':>8s} {'peak RSS MB':>12s} {'of matmul peak':>15s}"
    print(head + "  phases")
    for side, rs in runs.items():
        tps, lo, hi = summary(rs, "tokens_per_s")
        ms, rss, gf = (summary(rs, k)[0] for k in ("step_ms", "peak_rss_mb", "gflops"))
        ph = " ".join(f"{k} {v:.0%}" for k, v in rs[0]["phases"].items())
        pre = f"  precompute {rs[0]['precompute_s']:.1f} s" if rs[0].get("precompute_s") is not None else ""
        print(f"{side:6s} {tps:10.0f} ({lo:5.0f}-{hi:5.0f})   {ms:8.0f} {rss:12.0f} {gf / peak:15.1%}  {ph}{pre}")
    totals = {side: rs[0]["tokens_total"] for side, rs in runs.items()}
    ratio = summary(runs["ltune"], "tokens_per_s")[0] / summary(runs["trl"], "tokens_per_s")[0]
    rss = summary(runs["ltune"], "peak_rss_mb")[0] / summary(runs["trl"], "peak_rss_mb")[0]
    print(
        f"ltune / TRL: {ratio:.2f}x tokens/s, {rss:.2f}x peak RSS; tokens fed over the run {totals} "
        f"({'identical' if len(set(totals.values())) == 1 else 'DIFFERENT'}); {load_average()}"
    )
    if a.json:
        with open(a.json, "w") as f:
            record = {"args": vars(a), "matmul_gflops": peak, "runs": runs, "ratio": ratio, "rss_ratio": rss}
            summary_file = os.path.splitext(a.workload)[0] + ".summary.json" if a.workload else None
            if summary_file and os.path.exists(summary_file):  # the workload's lengths, from benchmarks/workload.py
                record["workload"] = json.load(open(summary_file))
            json.dump({**record, "provenance": provenance()}, f)


if __name__ == "__main__":
    main()
