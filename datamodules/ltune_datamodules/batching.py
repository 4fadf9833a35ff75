"""Batching pieces of every DataModule: padding (right for training, left for generation), a seeded sampler that
shards over ranks and resumes mid-epoch, the loader that checkpoints its position, and an in-order eval shard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler


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
        indices = list(super().__iter__())
        if self.resume is not None:
            epoch, done = self.resume
            self.resume = None
            if epoch == self.epoch:
                indices = indices[done * self.batch_size :]
        return iter(indices)


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
