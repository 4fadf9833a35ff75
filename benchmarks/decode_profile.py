"""Where GRPO's generation time goes on this CPU (issue 15's profile): the cost of one decode step of the real model
by batch rows, the lm_head read as a memory-bandwidth probe, and the two decode levers that keep float32 (a static
KV cache with a compiled forward, LoRA merged into the weights while sampling), each against plain ``generate``.

    python benchmarks/decode_profile.py                     # ~4 minutes on 2 cores, the first compile included
    python benchmarks/decode_profile.py --json out.json
    python benchmarks/decode_profile.py --model tiny --rows 2 --prompt 8 --new 4 --repeats 1    # smoke, ~1 minute

Sampling runs at temperature 1 with ``min_new_tokens = max_new_tokens``, so every variant decodes the same number of
steps; prompts are random token ids of one length (no padding). Medians over ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from _common import provenance


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (and the compile, where there is one)
    return statistics.median(_timed(fn) for _ in range(repeats))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def prompt_ids(model, rows: int, prompt: int) -> torch.Tensor:
    """Random ``[rows, prompt]`` token ids of ordinary tokens (ids 100-999, or 10 to the vocabulary's end)."""
    vocab = model.config.vocab_size
    return torch.randint(100, 1000, (rows, prompt)) if vocab > 1000 else torch.randint(10, vocab, (rows, prompt))


def decode_step_ms(model, rows: int, prompt: int, repeats: int) -> float:
    """Median wall time of one cached decode step (``rows`` x 1 token after a ``prompt``-token prefill)."""
    ids = prompt_ids(model, rows, prompt)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
        cache, nxt, mask = out.past_key_values, out.logits[:, -1:].argmax(-1), torch.ones_like(ids)
        times = []
        for _ in range(repeats + 2):
            mask = torch.cat([mask, mask.new_ones(rows, 1)], 1)
            t = time.perf_counter()
            out = model(input_ids=nxt, attention_mask=mask, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[2:])


def generate_s(model, rows: int, prompt: int, new: int, repeats: int, **kwargs) -> float:
    ids = prompt_ids(model, rows, prompt)

    def run():
        torch.manual_seed(0)
        with torch.no_grad():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=True,
                temperature=1.0,
                top_k=None,
                pad_token_id=0,
                **kwargs,
            )

    return _median_time(run, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=16, help="rows of the generate comparisons (prompts x G)")
    p.add_argument("--prompt", type=int, default=60, help="prompt tokens (the chat template + system prompt ~ 50)")
    p.add_argument("--new", type=int, default=32, help="new tokens of the generate comparisons")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args()
    from peft import LoraConfig, get_peft_model
    from transformers import CompileConfig

    from ltune.backbone import Backbone

    torch.set_num_threads(a.threads)
    model = Backbone(a.model).load_frozen().eval()
    res: dict = {"args": vars(a), "load_average_start": os.getloadavg()}
    res["decode_step_ms"] = {rows: decode_step_ms(model, rows, a.prompt, 10) for rows in (1, 4, 16, 64)}
    head = model.get_output_embeddings().weight.detach()
    x = torch.randn(1, head.shape[1])
    matvec = _median_time(lambda: [x @ head.T for _ in range(20)], a.repeats) / 20
    res["lm_head_read_gb_s"] = head.numel() * head.element_size() / matvec / 1e9
    gen = dict(rows=a.rows, prompt=a.prompt, new=a.new, repeats=a.repeats)
    res["generate_s"] = {"dynamic cache": generate_s(model, **gen)}
    compiled = CompileConfig(fullgraph=False, dynamic=False)
    compiled._compile_all_devices = True  # transformers compiles the static-cache decode on GPUs only by default
    res["generate_s"]["static cache, compiled"] = generate_s(
        model, **gen, cache_implementation="static", compile_config=compiled
    )
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")).eval()
    res["generate_s"]["LoRA r16, unmerged"] = generate_s(lora, **gen)
    lora.merge_adapter()
    res["generate_s"]["LoRA r16, merged"] = generate_s(lora, **gen)
    res["load_average_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({**res, "provenance": provenance()}, f, indent=1)


if __name__ == "__main__":
    main()
