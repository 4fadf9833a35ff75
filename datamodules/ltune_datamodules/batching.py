"""Batching pieces of every DataModule: padding (right for training, left for generation), seeded samplers (rows per
batch, or a token budget per batch) that shard over ranks and resume mid-epoch, the loader that checkpoints its
position, and an in-order eval shard."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ltune.packing import best_fit


def pad_right(seqs: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T]`` ids padded on the right and the attention mask."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def pad_left(seqs: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T]`` ids padded on the left (as generation needs) and the attention mask."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, n - len(s) :] = torch.as_tensor(s, dtype=torch.long)
            mask[i, n - len(s) :] = 1
    return ids, mask


class ResumableSampler(DistributedSampler):
    """Seeded shuffle (``seed + epoch``), sharded over ranks, that can skip the batches already trained.

    Subclassing ``DistributedSampler`` keeps Lightning from replacing it under DDP.
    """

    def __init__(self, data: Sequence, world: int, rank: int, seed: int, batch_size: int) -> None:
        super().__init__(data, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.resume: tuple[int, int] | None = None  # (epoch, batches already trained in it)

    def __iter__(self):
        return iter(self.untrained(list(super().__iter__())))

    def untrained(self, items: list) -> list:
        """``items`` (this epoch's, in order) without the batches already trained when resuming; the skip applies
        once."""
        if self.resume is not None:
            epoch, done = self.resume
            self.resume = None
            if epoch == self.epoch:
                return items[done * self.batch_size :]
        return items


def row_tokens(example: dict[str, Any]) -> int:
    """Tokens of an encoded row: the sum of its sequences' lengths (a pair's chosen and rejected rows both count)."""
    seqs = [v for k, v in example.items() if k.endswith("input_ids") or k == "prompt_ids"]
    seqs += [s["input_ids"] for s in example.get("sequences", ())]
    return sum(sum(map(len, v)) if v and isinstance(v[0], (list, tuple)) else len(v) for v in seqs)


class TokenBudgetSampler(ResumableSampler):
    """Batches of rows whose tokens sum to at most ``budget``, packed best-fit-decreasing over the whole data set (as
    TRL packs with ``packing_strategy="bfd"``): the batches are fixed, their order is shuffled with ``seed + epoch``,
    dealt to ranks in turn (the last ones repeated so every rank steps as often), and an epoch resumes mid-way.

    Each item it yields is a list of row indices (one batch); use it with ``batch_size=None`` and :class:`Batches`.
    A row longer than ``budget`` is a batch of its own.
    """

    def __init__(self, sizes: Sequence[int], world: int, rank: int, seed: int, budget: int) -> None:
        super().__init__(sizes, world, rank, seed, batch_size=1)  # an item is a whole batch
        self.batches = best_fit(sizes, budget)
        self.num_samples = math.ceil(len(self.batches) / world)
        self.total_size = self.num_samples * world

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.batches), generator=g).tolist()
        order = (order * math.ceil(self.total_size / len(order)))[: self.total_size]
        mine = order[self.rank : self.total_size : self.num_replicas]
        return iter([self.batches[b] for b in self.untrained(mine)])

    def __len__(self) -> int:
        return self.num_samples


class Batches(Sequence):
    """Rows indexed by a list of indices at once, for a loader whose sampler yields whole batches (an int index is one
    row, as in the rows themselves: a plain loader over them, e.g. the reference precompute's, reads rows)."""

    def __init__(self, rows: Sequence) -> None:
        self.rows = rows

    def __getitem__(self, index: int | list[int]) -> Any:
        return self.rows[index] if isinstance(index, int) else [self.rows[i] for i in index]

    def __len__(self) -> int:
        return len(self.rows)


class ResumableLoader(DataLoader):
    """A DataLoader whose state (epoch, batches trained) goes into Lightning checkpoints, for mid-epoch resume."""

    def __init__(self, data: Sequence, progress: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._progress()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume = (state["epoch"], state["batches"])


class Shard(DistributedSampler):
    """In-order shard ``rank::world`` without the padding ``DistributedSampler`` adds, so no row counts twice."""

    def __init__(self, data: Sequence, world: int, rank: int) -> None:
        super().__init__(data, num_replicas=world, rank=rank, shuffle=False)
        self.indices = list(range(rank, len(data), world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
