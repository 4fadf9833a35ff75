"""A sampler for tests whose completions depend on the prompt alone, not on an RNG stream."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ltune.generation import Samples


class ScriptedSampler:
    """Completion ``j`` of a prompt is ``k + 2 j`` of the prompt's tokens (``k`` in 1..3) drawn by a generator
    seeded by the prompt's ids, then the stop token: a prompt gets the same completions on any rank, in any batch and
    at any step, and different prompts get completions of different lengths. A :class:`ltune.generation.Sampler`
    (``model`` unused)."""

    def __call__(
        self,
        model: nn.Module,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        *,
        num_samples: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        eos_token_id: int,
        pad_token_id: int,
    ) -> Samples:
        rows = []
        for ids, mask in zip(prompt_ids, prompt_mask):
            real = ids[mask.bool()].cpu()
            key = sum((i + 1) * t for i, t in enumerate(real.tolist()))
            gen = torch.Generator().manual_seed(key)
            for j in range(num_samples):
                n = min(1 + key % 3 + 2 * j, max_new_tokens - 1)
                picks = torch.randint(
                    len(real), (n,), generator=gen
                )  # the prompt's own tokens: valid in any vocabulary
                rows.append(torch.cat([real[picks], torch.tensor([eos_token_id])]))
        width = max(len(r) for r in rows)
        completion = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        completion_mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            completion[i, : len(r)], completion_mask[i, : len(r)] = r, 1
        device = prompt_ids.device
        return Samples(
            prompt_ids.repeat_interleave(num_samples, 0),
            prompt_mask.repeat_interleave(num_samples, 0),
            completion.to(device),
            completion_mask.to(device),
        )
