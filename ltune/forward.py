"""Forward passes of a loaded backbone, without materialising the logits: the final hidden states, each row's last
token state, and per-token float32 log-probs of completion tokens through :mod:`ltune.kernels`; the model under a peft
wrapper and the reference context (LoRA adapter off). :mod:`ltune.backbone` loads the model these run on.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from ltune.kernels import LogProbs, linear_token_logprobs


def unwrap(model: nn.Module) -> nn.Module:
    """The ``transformers`` model under a peft wrapper (LoRA layers stay injected and active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def reference_model(model: nn.Module):
    """Context manager that runs ``model`` as its reference: LoRA adapter disabled (a no-op without LoRA).

    Objectives that need a frozen reference without LoRA keep their own copy instead.
    """
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def hidden_states(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None
) -> Tensor:
    """Final (normed) hidden states ``[B, T, H]`` of the decoder, without computing the logits. ``attention_mask``
    is ``[B, T]`` or a custom ``[B, 1, T, T]`` mask (with its ``position_ids``; see :mod:`ltune.packing`)."""
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    if getattr(unwrap(model), "_is_fsdp_managed_module", False):  # FSDP2 gathers the root's weights in its forward
        return model(**kwargs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]  # head on 1 position
    return unwrap(model).get_decoder()(**kwargs).last_hidden_state


def last_token_states(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """``[B, H]`` hidden state at each row's last real token (right or left padding): sequence pooling for reward
    models, CoIN's contrastive term and last-token embeddings."""
    last = attention_mask.shape[1] - 1 - attention_mask.flip(1).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


def completion_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    with_argmax: bool = False,
    hidden: Tensor | None = None,
) -> LogProbs:
    """Per-token float32 log-probs of the labelled tokens, through :func:`ltune.kernels.linear_token_logprobs`.

    ``labels`` is ``input_ids`` with ``-100`` at tokens that are not scored (prompt, padding). The logits at
    position ``t`` score token ``t + 1``, so the outputs have shape ``[B, T - 1]`` and are 0 where unscored.

    Args:
        model: A causal LM (optionally wrapped by peft).
        input_ids: ``[B, T]`` token ids.
        attention_mask: ``[B, T]`` 1 for real tokens.
        labels: ``[B, T]`` target ids, ``-100`` where unscored.
        temperature: Divides the logits before the softmax.
        with_entropy: Also return the per-token entropy (detached).
        with_argmax: Also return whether the argmax token equals the label.
        hidden: The ``[B, T, H]`` final hidden states if already computed (e.g. by
            :func:`ltune.packing.shared_prefix_hidden`); ``input_ids`` and ``attention_mask`` are then unused.
    """
    hidden = (hidden_states(model, input_ids, attention_mask) if hidden is None else hidden)[:, :-1]
    head = unwrap(model).get_output_embeddings()
    return linear_token_logprobs(
        hidden,
        head.weight,
        labels[:, 1:],
        bias=getattr(head, "bias", None),
        temperature=temperature,
        with_entropy=with_entropy,
        with_argmax=with_argmax,
    )
