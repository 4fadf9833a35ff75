"""Sampling with ``transformers``' continuous batching (``model.generate_batch``): completions that finish leave the
batch at once and waiting ones take their place, so no decode step is spent on a finished row, and a prompt's
samples are forked from its prefilled KV blocks. It follows :class:`ltune.generation.Sampler`, so it replaces
:class:`ltune.generation.HFSampler` wherever a sampler is taken (GRPO's ``sampler``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from ltune.generation import Samples, completion_mask


class ContinuousSampler:
    """``G`` samples per prompt from ``model.generate_batch`` (greedy when ``temperature == 0``), in eval mode;
    ``transformers`` switches the model to paged attention for the call and back after it. TRL's GRPO runs the same
    engine with ``use_transformers_continuous_batching``.

    The KV cache holds every request of a call at once (``num_blocks`` sized from the prompts and
    ``max_new_tokens``) unless ``config`` says otherwise, and the sampling seed is drawn from torch's generator, so a
    seeded run samples the same completions again (``transformers`` draws a random one otherwise).

    Args:
        config: Options of ``transformers.generation.ContinuousBatchingConfig`` (e.g. ``{"max_batch_tokens": 512}``,
            or ``{"num_blocks": null, "max_memory_percent": 0.5}`` to size the cache from free GPU memory as TRL does).
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or {})

    @torch.no_grad()
    def __call__(
        self,
        model: nn.Module,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        *,
        num_samples: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        eos_token_id: int,
        pad_token_id: int,
        top_k: int | None = None,
    ) -> Samples:
        from transformers.generation import ContinuousBatchingConfig

        sampling = temperature > 0
        generation = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=top_k if sampling else None,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            num_return_sequences=num_samples if sampling else 1,  # greedy: one completion, copied
        )
        prompts = [ids[m.bool()].tolist() for ids, m in zip(prompt_ids, prompt_mask, strict=True)]
        blocks = kv_blocks([len(p) for p in prompts], max_new_tokens, num_samples, self.config.get("page_size", 256))
        config = {"num_blocks": blocks, "seed": int(torch.randint(0, 2**31 - 1, ()).item()), **self.config}
        was_training = model.training
        model.eval()
        try:
            out = model.generate_batch(
                prompts,
                generation_config=generation,
                continuous_batching_config=ContinuousBatchingConfig(**config),
                progress_bar=False,
            )
        finally:
            model.train(was_training)
        results = list(out.values())
        failed = [r.request_id for r in results if r.error is not None]
        if len(results) != len(prompts) * generation.num_return_sequences or failed:
            raise RuntimeError(
                f"continuous batching returned {len(results)} of {len(prompts) * num_samples} completions"
                + (f"; failed: {failed[:3]}: {results[0].error}" if failed else "")
            )
        # a prompt's samples come together (its children, then the parent): prompt-major, as Samples lays them out
        results = [r for r in results for _ in range(num_samples // generation.num_return_sequences)]
        width = max(1, max(len(r.generated_tokens) for r in results))
        completion = torch.full((len(results), width), pad_token_id, dtype=torch.long)
        for i, r in enumerate(results):
            completion[i, : len(r.generated_tokens)] = torch.as_tensor(r.generated_tokens, dtype=torch.long)
        lengths = torch.tensor([len(r.generated_tokens) for r in results])
        mask = completion_mask(completion, eos_token_id) * (torch.arange(width) < lengths[:, None])
        completion, mask = completion.to(prompt_ids.device), mask.to(prompt_ids.device)
        return Samples(
            prompt_ids.repeat_interleave(num_samples, 0),
            prompt_mask.repeat_interleave(num_samples, 0),
            completion.masked_fill(mask == 0, pad_token_id),
            mask,
            None,
        )


def kv_blocks(prompt_lengths: list[int], max_new_tokens: int, copies: int, page_size: int = 256) -> int:
    """KV-cache blocks (``page_size`` tokens each) that hold every request of one call at once: each prompt's
    ``copies`` samples at their longest."""
    return sum(-(-(n + max_new_tokens) // page_size) for n in prompt_lengths) * copies
