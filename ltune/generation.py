"""Sampling completions from a policy: ``G`` samples per prompt, with token ids, completion masks and the sampler's
per-token log-probs. ``HFSampler`` uses ``transformers``' ``generate`` (KV cache); anything that follows the
``Sampler`` protocol (e.g. a vLLM engine) can replace it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ltune.backbone import CACHE_KWARG
from ltune.kernels import IGNORE_INDEX


@dataclass
class Samples:
    """Completions of ``B`` prompts, ``G`` each, laid out prompt-major (rows ``b*G .. b*G+G-1`` share prompt ``b``).

    Attributes:
        prompt_ids: ``[B*G, P]`` left-padded prompt ids.
        prompt_mask: ``[B*G, P]`` 1 on real prompt tokens.
        completion_ids: ``[B*G, C]`` generated ids, padded after the stop token.
        completion_mask: ``[B*G, C]`` 1 up to and including the first stop token.
        logprobs: ``[B*G, C]`` float32 log-probs of the generated tokens under the sampling distribution, or None.
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    logprobs: Tensor | None = None


class Sampler(Protocol):
    """Anything that turns left-padded prompts into :class:`Samples`."""

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
    ) -> Samples: ...


class HFSampler:
    """Sampling with ``model.generate`` (greedy when ``temperature == 0``), in eval mode with the KV cache.
    Besides the :class:`Sampler` arguments it takes ``top_k`` (sample among the ``top_k`` most likely tokens; None
    or 0 = no top-k filter, also overriding ``transformers``' default of 50).

    With ``num_samples`` > 1 each prompt is prefilled once and its KV cache copied to its samples (``generate`` alone
    prefills every copy): the same samples, ``num_samples`` times fewer prompt tokens through the model.

    Args:
        with_logprobs: Also return the per-token log-probs of the sampled tokens (tempered, top-p/top-k not applied).
        share_prefill: Prefill each prompt once for its ``num_samples`` samples (False: ``generate`` repeats it).
    """

    def __init__(self, with_logprobs: bool = False, share_prefill: bool = True) -> None:
        self.with_logprobs, self.share_prefill = with_logprobs, share_prefill

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
        streamer: Any = None,
    ) -> Samples:
        was_training = model.training
        model.eval()
        sampling = temperature > 0
        inputs = dict(input_ids=prompt_ids, attention_mask=prompt_mask, num_return_sequences=num_samples)
        if self.share_prefill and num_samples > 1 and prompt_ids.shape[1] > 1:
            inputs = prefilled(model, prompt_ids, prompt_mask, num_samples)
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=top_k if sampling else None,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            return_dict_in_generate=True,
            output_logits=self.with_logprobs,
            use_cache=True,
            streamer=streamer,
        )
        model.train(was_training)
        p = prompt_ids.shape[1]
        completion = out.sequences[:, p:]
        mask = completion_mask(completion, eos_token_id)
        completion = completion.masked_fill(mask == 0, pad_token_id)
        logprobs = None
        if self.with_logprobs:
            logits = torch.stack(out.logits, dim=1).float() / (temperature if sampling else 1.0)
            logprobs = logits.log_softmax(-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1) * mask
        return Samples(
            prompt_ids.repeat_interleave(num_samples, 0),
            prompt_mask.repeat_interleave(num_samples, 0),
            completion,
            mask,
            logprobs,
        )


class GenerationProgress:
    """A ``generate`` streamer that shows a bar over the decode steps of one batch (``transformers`` calls ``put``
    with the prompt, then once per new token, then ``end``), closed with the batch's rows per second.

    Args:
        rows: Sequences generated at once.
        max_new_tokens: The batch's token budget (the bar's length; an early stop on EOS ends it sooner).
        desc: What is generated (``"evaluation"``, ``"E-step"``).
    """

    def __init__(self, rows: int, max_new_tokens: int, desc: str = "generating") -> None:
        from tqdm.auto import tqdm

        self.rows, self.start, self.prompt_seen = rows, time.perf_counter(), False
        self.bar = tqdm(total=max_new_tokens, desc=f"{desc}: {rows} rows", unit="tok", leave=False)

    def put(self, value: Tensor) -> None:
        if self.prompt_seen:
            self.bar.update(1)
        self.prompt_seen = True

    def end(self) -> None:
        self.bar.set_postfix_str(f"{self.rows / max(time.perf_counter() - self.start, 1e-9):.1f} rows/s")
        self.bar.close()


def prefilled(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, copies: int) -> dict[str, Any]:
    """``generate`` inputs for ``copies`` samples of each left-padded prompt, with a KV cache of all but each prompt's
    last token computed once per prompt and repeated per sample (``generate`` then runs the last token and decodes)."""
    position_ids = (prompt_mask.long().cumsum(-1) - 1).clamp_min(0)  # as generate numbers left-padded positions
    out = model(
        input_ids=prompt_ids[:, :-1],
        attention_mask=prompt_mask[:, :-1],
        position_ids=position_ids[:, :-1],
        use_cache=True,
    )
    cache = getattr(out, CACHE_KWARG)
    cache.batch_repeat_interleave(copies)
    return {
        "input_ids": prompt_ids.repeat_interleave(copies, 0),
        "attention_mask": prompt_mask.repeat_interleave(copies, 0),
        CACHE_KWARG: cache,
    }


def completion_mask(ids: Tensor, eos_token_id: int) -> Tensor:
    """``[N, C]`` long mask that is 1 up to and including the first ``eos_token_id`` of each row."""
    is_eos = ids == eos_token_id
    before = is_eos.long().cumsum(-1) - is_eos.long()  # number of eos strictly before each position
    return (before == 0).long()


def decode(tokenizer, samples: Samples) -> list[str]:
    """Completion texts without special tokens."""
    return tokenizer.batch_decode(samples.completion_ids, skip_special_tokens=True)  # padded with pad after the stop


def _pad_cols(t: Tensor, width: int, value: float) -> Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)


def concat_samples(parts: list[Samples], pad_token_id: int) -> Samples:
    """Stack :class:`Samples` of prompt chunks (same left-padded prompt width) row-wise, right-padding completions."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.completion_ids.shape[1] for p in parts)
    with_lp = all(p.logprobs is not None for p in parts)
    return Samples(
        torch.cat([p.prompt_ids for p in parts]),
        torch.cat([p.prompt_mask for p in parts]),
        torch.cat([_pad_cols(p.completion_ids, width, pad_token_id) for p in parts]),
        torch.cat([_pad_cols(p.completion_mask, width, 0) for p in parts]),
        torch.cat([_pad_cols(p.logprobs, width, 0.0) for p in parts]) if with_lp else None,
    )


def sample_groups(
    sampler: Sampler,
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    num_samples: int,
    generation_batch_size: int | None = None,
    pad_token_id: int,
    **kwargs,
) -> Samples:
    """``num_samples`` completions of each of ``B`` prompts, generated ``generation_batch_size`` completions at a
    time (a multiple of ``num_samples``; None = all at once), laid out prompt-major.

    Raises:
        ValueError: If ``generation_batch_size`` is not a multiple of ``num_samples``.
    """
    if generation_batch_size is not None and (
        generation_batch_size < num_samples or generation_batch_size % num_samples
    ):
        raise ValueError(
            f"generation_batch_size={generation_batch_size} completions is not a multiple of "
            f"num_samples={num_samples} completions per prompt"
        )
    step = prompt_ids.shape[0] if generation_batch_size is None else generation_batch_size // num_samples
    parts = [
        sampler(
            model,
            prompt_ids[i : i + step],
            prompt_mask[i : i + step],
            num_samples=num_samples,
            pad_token_id=pad_token_id,
            **kwargs,
        )
        for i in range(0, prompt_ids.shape[0], step)
    ]
    return concat_samples(parts, pad_token_id)


def select(samples: Samples, index: Tensor) -> Samples:
    """The rows ``index`` of ``samples`` (e.g. the first ``N_train`` of each group of ``N_vote``)."""
    return Samples(
        samples.prompt_ids[index],
        samples.prompt_mask[index],
        samples.completion_ids[index],
        samples.completion_mask[index],
        None if samples.logprobs is None else samples.logprobs[index],
    )


def training_inputs(samples: Samples, ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Prompt + completion as one sequence for a scoring forward: ``input_ids``, ``attention_mask`` and ``labels``
    (the completion tokens up to and including the stop token; ``ignore_index`` elsewhere). Feed them to
    :func:`ltune.forward.completion_logprobs`; its outputs ``[:, P - 1:]`` line up with ``completion_ids``."""
    input_ids = torch.cat([samples.prompt_ids, samples.completion_ids], 1)
    attention_mask = torch.cat([samples.prompt_mask, samples.completion_mask], 1)
    labels = torch.cat(
        [
            torch.full_like(samples.prompt_ids, ignore_index),
            samples.completion_ids.masked_fill(samples.completion_mask == 0, ignore_index),
        ],
        1,
    )
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def terminated(samples: Samples, eos_token_id: int) -> Tensor:
    """``[N]`` bool: the completion stopped at ``eos_token_id`` (False = cut by ``max_new_tokens``)."""
    return ((samples.completion_ids == eos_token_id) & (samples.completion_mask == 1)).any(1)
