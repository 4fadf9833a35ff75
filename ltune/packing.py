"""Packing: several rows run as one sequence, exactly as if each ran alone. One mechanism for every objective:
a preference pair's two rows (around their shared prompt), a prompt's sampled completions (GRPO, RLSC), and SFT rows
(best-fit-decreasing into as few sequences as pay back, around the chat template and system prompt they share).

Causal attention makes the hidden state at position ``t`` depend only on tokens ``0..t``, so rows that agree up to
``t`` have the same hidden states there: each group of rows is packed into one sequence, ``[shared prefix][rest of
row 1][rest of row 2]...``, where each rest attends to the prefix and to itself only (a block mask) and keeps its own
position ids (they restart at the end of the prefix); the hidden states are then gathered back into the ``[N, T, H]``
layout of the unpacked batch. Loss, token counts and gradients are those of the unpacked rows; fewer tokens go
through the decoder (no padding, each shared prefix once). With dropout on, a shared token draws one dropout mask for
all of its rows. Attention implementations that take an arbitrary mask (``sdpa``, ``eager``) pack; others fall back
to the plain forward.

    index     0  1  2  3 | 4  5 | 6  7  8        packed row of a pair with a 4-token shared prefix
    segment   0  0  0  0 | 1  1 | 2  2  2        (chosen rest 2 tokens, rejected rest 3 tokens)
    position  0  1  2  3 | 4  5 | 4  5  6

Rows with nothing in common pack the same way with an empty prefix (every row its own segment, positions from 0).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ltune.backbone import CACHE_KWARG
from ltune.forward import completion_logprobs, hidden_states, unwrap
from ltune.kernels import LogProbs

MASKABLE = ("sdpa", "eager")  # attention implementations that honour a custom 4D mask


@dataclass
class Packed:
    """Groups of rows packed around their shared prefix.

    Attributes:
        input_ids: ``[G, P]`` packed token ids (0 at padding).
        position_ids: ``[G, P]`` each token's position in its own row.
        segments: ``[G, P]`` 0 for the shared prefix, ``k + 1`` for the rest of the group's row ``k``, -1 for padding.
        index: ``[N, T]`` position in the flattened ``[G * P]`` packed tokens of every (row, position) of the
            unpacked batch (0 at padding).
    """

    input_ids: Tensor
    position_ids: Tensor
    segments: Tensor
    index: Tensor

    def attention_mask(self, dtype: torch.dtype | None = None) -> Tensor:
        """``[G, 1, P, P]`` block-causal mask: a token sees the prefix and its own row's earlier tokens (padding sees
        itself only, so no row is empty). Boolean (True = attend) when ``dtype`` is None, else additive 0 / min."""
        seg, n = self.segments, self.segments.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=seg.device).tril()
        q, kv = seg[:, :, None], seg[:, None, :]
        allowed = causal & (q >= 0) & (kv >= 0) & ((kv == 0) | (kv == q))
        allowed |= torch.eye(n, dtype=torch.bool, device=seg.device)
        return as_attention_mask(allowed[:, None], dtype)


def as_attention_mask(allowed: Tensor, dtype: torch.dtype | None) -> Tensor:
    """A boolean 4D mask (True = attend) as is when ``dtype`` is None, else additive: 0 / the dtype's minimum, the
    form both ``eager`` and ``sdpa`` attention take. SDPA turns a boolean mask into an additive one in every layer
    and keeps each for the backward (one ``[G, 1, T, T]`` float tensor per layer: 2 GB over 30 layers at 4,096
    tokens); an additive mask is used as it is, one tensor for all layers."""
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def pair_groups(n_rows: int, device: torch.device | str | None = None) -> Tensor:
    """``[B, 2]`` row indices of the pairs of a ``[2B, T]`` preference batch (the B chosen rows first)."""
    return torch.arange(n_rows, device=device).view(2, -1).T


def consecutive_groups(n_rows: int, size: int, device: torch.device | str | None = None) -> Tensor:
    """``[ceil(N / size), size]`` row indices in order, -1 filling the last group: a prompt's ``G`` samples laid out
    prompt-major (rows ``b*G .. b*G+G-1``), or SFT rows packed ``size`` at a time."""
    rows = torch.arange(-(-n_rows // size) * size, device=device)
    return torch.where(rows < n_rows, rows, -1).view(-1, size)


def best_fit(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: bins of indices whose ``sizes`` sum to at most ``capacity``.

    Items are placed largest first (ties by index), each into the bin it fills most tightly, or a new bin when none
    has room (an item larger than ``capacity`` gets a bin of its own). TRL packs a dataset the same way
    (``packing_strategy="bfd"``). ``O(n log n)`` search over the bins' rooms, so a whole data set packs in seconds.
    """
    bins: list[list[int]] = []
    rooms: list[tuple[int, int]] = []  # (room left, bin), sorted
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        at = bisect.bisect_left(rooms, (sizes[i], -1))
        if at < len(rooms):
            room, b = rooms.pop(at)
            bins[b].append(i)
            bisect.insort(rooms, (room - sizes[i], b))
        else:
            bins.append([i])
            bisect.insort(rooms, (capacity - sizes[i], len(bins) - 1))
    return bins


def best_fit_groups(sizes: Sequence[int], capacity: int, device: torch.device | str | None = None) -> Tensor:
    """:func:`best_fit` as a ``[G, K]`` tensor of row indices, -1 filling the shorter bins."""
    bins = best_fit(sizes, capacity)
    k = max(len(b) for b in bins)
    return torch.tensor([b + [-1] * (k - len(b)) for b in bins], dtype=torch.long, device=device)


def common_prefix_length(input_ids: Tensor, attention_mask: Tensor) -> int:
    """Length of the longest run of leading real tokens that every row shares (right-padded rows)."""
    real = attention_mask.bool()
    agree = ((input_ids == input_ids[:1]) & real & real[:1]).all(0)
    return int(agree.long().cumprod(0).sum())


def row_groups(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, pack_length: int | None = None) -> Tensor:
    """Bins of right-padded rows for :func:`shared_prefix_hidden`: best-fit decreasing on each row's tokens after the
    prefix all rows share (a bin costs that prefix once), into sequences of ``pack_length`` tokens.

    ``pack_length`` None picks it from the cost model of :func:`shared_prefix_hidden` (a sequence of length ``L``
    costs ``L (c + L)``): the batch's longest row, or ``p + sqrt(p (c + p))`` when longer, the length at which rows
    that share a ``p``-token prefix cost least per row. With no shared prefix that is the longest row: packing then
    removes padding only and makes no sequence longer than the unpacked batch's.
    """
    lengths = attention_mask.sum(1)
    p = common_prefix_length(input_ids, attention_mask)
    if pack_length is None:
        config = unwrap(model).config
        c = _cost_constant(config)
        pack_length = max(int(lengths.max()), int(p + math.sqrt(p * (c + p))))
    return best_fit_groups((lengths - p).tolist(), pack_length - p, input_ids.device)


def _cost_constant(config) -> float:
    """``c = 2 d + 1.5 d_ff``: the sequence length at which a layer's attention (4 d L per token) costs as much as its
    linear layers (2 (4 d^2 + 3 d d_ff)), in units of ``d``."""
    d = config.hidden_size
    return 2 * d + 1.5 * getattr(config, "intermediate_size", 4 * d)


def pack_groups(input_ids: Tensor, attention_mask: Tensor, groups: Tensor) -> Packed:
    """Pack each group of rows around the longest prefix of real tokens that all of its rows share.

    Args:
        input_ids: ``[N, T]`` token ids, padded anywhere (right for training pairs; left-padded prompt + right-padded
            completion for sampled groups): a row's tokens are its real ones, in order.
        attention_mask: ``[N, T]`` 1 for real tokens.
        groups: ``[G, K]`` row indices, every row in exactly one group; -1 marks an empty slot (never the first).
    """
    n, t = input_ids.shape
    g, k = groups.shape
    dev = input_ids.device
    real = attention_mask.bool()
    lengths = real.sum(1)  # [N]
    pos = (real.cumsum(1) - 1).clamp_min(0)  # [N, T] each real token's position in its row
    order = torch.argsort((~real).to(torch.uint8), dim=1, stable=True)  # real tokens first, in order
    valid = groups >= 0
    filled = torch.where(valid, groups, groups[:, :1])  # an empty slot repeats the first row: no prefix changes
    ids_g, real_g = input_ids.gather(1, order)[filled], real.gather(1, order)[filled]  # [G, K, T]
    agree = ((ids_g == ids_g[:, :1]) & real_g).all(1)  # [G, T]
    shared = agree.long().cumprod(1).sum(1)  # [G] longest common prefix of the group's rows
    rest = torch.where(valid, lengths[filled] - shared[:, None], 0)  # [G, K]
    offset = shared[:, None] + rest.cumsum(1) - rest  # [G, K] where each row's rest starts in the packed row
    size = int((shared + rest.sum(1)).max())
    rows = groups[valid]  # each row's group, slot and rest offset
    slots = torch.arange(g * k, device=dev).view(g, k)[valid]
    row_group = torch.empty(n, dtype=torch.long, device=dev).index_put_((rows,), slots // k)
    row_slot = torch.empty(n, dtype=torch.long, device=dev).index_put_((rows,), slots % k)
    row_offset = torch.empty(n, dtype=torch.long, device=dev).index_put_((rows,), offset[valid])
    in_prefix = pos < shared[row_group][:, None]  # [N, T]
    local = torch.where(in_prefix, pos, row_offset[:, None] + pos - shared[row_group][:, None])
    flat = torch.where(real, row_group[:, None] * size + local, torch.zeros_like(local))
    packed_ids = torch.zeros(g * size, dtype=input_ids.dtype, device=dev)
    position_ids = torch.zeros(g * size, dtype=torch.long, device=dev)
    segments = torch.full((g * size,), -1, dtype=torch.long, device=dev)
    packed_ids[flat[real]] = input_ids[real]  # prefix positions receive the same id from every row of the group
    position_ids[flat[real]] = pos[real]
    segments[flat[real]] = torch.where(in_prefix, 0, row_slot[:, None] + 1)[real]
    return Packed(packed_ids.view(g, size), position_ids.view(g, size), segments.view(g, size), flat)


def shared_prefix_hidden(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, groups: Tensor, min_saving: float = 0.1
) -> Tensor:
    """``[N, T, H]`` final hidden states, equal to ``hidden_states(model, input_ids, attention_mask)`` at every real
    token, from one packed forward per group (see the module docstring). Falls back to the plain forward when the
    model's attention cannot take a custom mask or packing saves less than ``min_saving`` of the forward's FLOPs:
    a sequence of length L costs about ``L (c + L)``, ``c = 2 d + 1.5 d_ff`` tokens being where a layer's attention
    (4 d L per token) catches up with its linear layers (2 (4 d^2 + 3 d d_ff)), so long packed groups do not pay
    back their attention.

    Args:
        model: A causal LM (optionally wrapped by peft).
        input_ids: ``[N, T]`` token ids (any padding, see :func:`pack_groups`).
        attention_mask: ``[N, T]`` 1 for real tokens.
        groups: ``[G, K]`` row indices of the groups whose rows share a prefix (:func:`pair_groups` for pairs,
            :func:`consecutive_groups` for a prompt's samples).
        min_saving: Pack only when it removes at least this fraction of the forward's FLOPs.
    """
    config = unwrap(model).config
    if getattr(config, "_attn_implementation", None) not in MASKABLE:
        return hidden_states(model, input_ids, attention_mask)
    packed = pack_groups(input_ids, attention_mask, groups)
    c = _cost_constant(config)
    cost = lambda ids: ids.numel() * (c + ids.shape[1])  # noqa: E731  (rows padded to the batch's width)
    if cost(packed.input_ids) > (1 - min_saving) * cost(input_ids):
        return hidden_states(model, input_ids, attention_mask)
    mask = packed.attention_mask(unwrap(model).get_input_embeddings().weight.dtype)  # additive: see as_attention_mask
    hidden = hidden_states(model, packed.input_ids, mask, packed.position_ids)
    return hidden.flatten(0, 1)[packed.index]


def grouped_logprobs(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, groups: Tensor | None, **kwargs
) -> LogProbs:
    """:func:`ltune.forward.completion_logprobs` through one packed forward per group (``groups`` None: the plain
    forward); ``kwargs`` are its keyword arguments (``temperature``, ``with_entropy``, ``with_argmax``)."""
    hidden = None if groups is None else shared_prefix_hidden(model, input_ids, attention_mask, groups)
    return completion_logprobs(model, input_ids, attention_mask, labels, hidden=hidden, **kwargs)


ROW_MIN_TOKENS = 256  # shorter rows stay batched: a forward of fewer tokens runs its matmuls at a lower rate


def row_slices(model: nn.Module, attention_mask: Tensor) -> list[slice]:
    """How to run a batch of right-padded rows: one forward of the whole batch, or (on CPU, when the rows differ in
    length and each holds at least ``ROW_MIN_TOKENS`` tokens) one forward per row, unpadded. A padded batch with
    its ``[B, T]`` mask computes every score of the ``B x T x T`` attention (the mask forces SDPA's masked path) and
    every padding position; a row alone runs causal attention (half the scores) on its own tokens only."""
    lengths = attention_mask.sum(1)
    base = unwrap(model)
    on_cpu = next(base.parameters()).device.type == "cpu"
    if not on_cpu or int(lengths.min()) < ROW_MIN_TOKENS or int(lengths.min()) == int(lengths.max()):
        return [slice(0, len(lengths))]
    return [slice(i, i + 1) for i in range(len(lengths))]


def shared_prefix_lengths(a: Tensor, a_mask: Tensor, b: Tensor, b_mask: Tensor) -> Tensor:
    """``[N]`` length of the leading real tokens that row ``i`` of ``a`` and row ``i`` of ``b`` share (right-padded)."""
    width = min(a.shape[1], b.shape[1])
    agree = (a[:, :width] == b[:, :width]) & a_mask[:, :width].bool() & b_mask[:, :width].bool()
    return agree.long().cumprod(1).sum(1)


def continued_hidden(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, twin_ids: Tensor, twin_mask: Tensor
) -> tuple[Tensor, Tensor | None]:
    """Final hidden states ``[N, T, H]`` of right-padded rows (with gradient), and ``[N, T', H]`` of their twins
    (without): row ``i`` of ``twin_ids`` repeats the first tokens of row ``i`` (e.g. a KTO row's prompt with another
    completion), so only its rest runs, under ``torch.no_grad``, off the rows' KV cache. Equal at every real token to
    :func:`~ltune.forward.hidden_states` of each (causal attention: the shared tokens have the same keys and
    values). The twins come back None where the model cannot continue (no custom-mask attention, a cache-less
    forward, e.g. under activation checkpointing, or FSDP): the caller then runs them in their own forward.

    Args:
        model: A causal LM (optionally wrapped by peft).
        input_ids: ``[N, T]`` the rows' token ids.
        attention_mask: ``[N, T]`` 1 for real tokens.
        twin_ids: ``[N, T']`` the twins' token ids.
        twin_mask: ``[N, T']`` 1 for real tokens.
    """
    base = unwrap(model)
    if base.config._attn_implementation not in MASKABLE or getattr(base, "_is_fsdp_managed_module", False):
        return hidden_states(model, input_ids, attention_mask), None
    out = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
    hidden, cache = out.last_hidden_state, getattr(out, CACHE_KWARG, None)
    if cache is None:
        return hidden, None
    with torch.no_grad():
        n, width, device = len(input_ids), input_ids.shape[1], input_ids.device
        share = shared_prefix_lengths(input_ids, attention_mask, twin_ids, twin_mask)
        rest = twin_mask.sum(1) - share
        steps = torch.arange(max(int(rest.max()), 1), device=device)
        real = steps < rest[:, None]  # [N, R] the twins' tokens after their shared prefix
        pos = share[:, None] + steps
        ids = twin_ids.gather(1, pos.clamp(max=twin_ids.shape[1] - 1)) * real
        sees_cache = torch.arange(width, device=device) < share[:, None]  # [N, width]
        causal = (steps[:, None] >= steps[None, :]) & real[:, None, :]
        allowed = torch.cat([sees_cache[:, None, :].expand(-1, len(steps), -1), causal], -1)
        allowed[:, :, width:] |= torch.eye(len(steps), dtype=torch.bool, device=device)  # padding sees itself
        mask = as_attention_mask(allowed[:, None], hidden.dtype)
        kwargs = {CACHE_KWARG: cache}
        tail = base.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **kwargs)
        tail = tail.last_hidden_state
        at = torch.arange(twin_ids.shape[1], device=device).expand(n, -1)
        from_rows = hidden.detach().gather(1, at.clamp(max=width - 1)[..., None].expand(-1, -1, hidden.shape[-1]))
        from_tail = tail.gather(1, (at - share[:, None]).clamp(0, len(steps) - 1)[..., None].expand_as(from_rows))
        twins = torch.where((at < share[:, None])[..., None], from_rows, from_tail)
    return hidden, twins
