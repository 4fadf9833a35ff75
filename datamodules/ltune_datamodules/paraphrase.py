"""Paraphrase pairs for CoIN (Yan et al., 2024, arXiv:2402.11138): an instruction, a paraphrase of it, the same
input and output. Rows are laid out in pairs of hard negatives, and a sampler shuffles pairs, not rows."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler

from ltune.datamodules.base import LTuneData, with_input
from ltune.datamodules.batching import ResumableLoader, ResumableSampler, pad_right
from ltune.kernels import IGNORE_INDEX

log = logging.getLogger(__name__)


class _PairOrder(DistributedSampler):
    """Row order made of adjacent pairs ``(2k, 2k + 1)``: pairs shuffled (``seed + epoch``) or in order, then
    sharded ``rank::world`` by pair. Shuffled orders are padded with repeated pairs to the same length on every rank
    (DDP needs equal step counts); in-order (validation) shards are not."""

    def __init__(self, data: Sequence, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0, **_: Any):
        super().__init__(data, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        pairs = len(data) // 2
        self.pairs_per_rank = -(-pairs // num_replicas) if shuffle else len(range(rank, pairs, num_replicas))
        self.num_samples = 2 * self.pairs_per_rank
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        pairs = list(range(len(self.dataset) // 2))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(pairs)
            pairs += pairs[: self.pairs_per_rank * self.num_replicas - len(pairs)]
        return iter(i for p in pairs[self.rank :: self.num_replicas] for i in (2 * p, 2 * p + 1))


class PairSampler(ResumableSampler, _PairOrder):
    """:class:`ResumableSampler` (mid-epoch resume, DDP sharding, ``seed + epoch``) over shuffled *pairs* of rows."""


class ParaphraseData(LTuneData):
    """Rows of ``instruction``, ``paraphrase`` (of the instruction), ``input`` (may be empty) and ``output``.

    Each row gives two sequences with the same output tokens: ``instruction [+ input] -> output`` and
    ``paraphrase [+ input] -> output``. After loading, rows are laid out so that rows ``2k`` and ``2k + 1`` are
    *hard negatives* of each other: two different rows with the same ``hard_negative_key`` value (by default the
    ``category``: same kind of task, different input and output), as CoIN's data puts "every entry at an odd
    index" after the entry it is the hard negative of. The train sampler shuffles pairs, never splitting one, so
    every (even) batch holds whole pairs; a row left without a partner is dropped and counted.

    Batches stack ``[B originals; B paraphrases]`` in ``input_ids``/``attention_mask``/``labels`` (``[2B, T]``,
    right-padded, ``-100`` outside the output).

    Args:
        hard_negative_key: Field whose equal values make two rows hard negatives (``None``: random pairs).
        **kwargs: Arguments of :class:`LTuneData`; ``batch_size`` must be even.
    """

    fields = {"instruction": str, "paraphrase": str, "output": str}
    optional = {"input": str, "answer": str, "category": str}

    def __init__(self, *args: Any, hard_negative_key: str | None = "category", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.batch_tokens is not None:
            raise ValueError("ParaphraseData batches whole hard-negative pairs by batch_size; batch_tokens is not used")
        if self.batch_size % 2 or self.eval_batch_size % 2:
            raise ValueError(f"batch sizes must be even (whole hard-negative pairs), got {self.batch_size}")
        self.hard_negative_key = hard_negative_key

    def encode(self, row: dict) -> dict[str, Any]:
        orig = self.encode_pair(with_input(row["instruction"], row), row["output"])
        para = self.encode_pair(with_input(row["paraphrase"], row), row["output"])
        group = row.get(self.hard_negative_key) if self.hard_negative_key else None
        return {"sequences": (orig, para), "group": group, "category": row.get("category", "all")}

    def setup(self, stage: str | None = None) -> None:
        new = [s for s in ("train", "val") if s not in self.data]
        super().setup(stage)
        for split in new:
            if split in self.data:
                self.data[split] = self.pair_up(split, self.data[split])

    def pair_up(self, split: str, rows: list[dict]) -> list[dict]:
        """Reorder rows into adjacent hard-negative pairs (seeded); leftovers pair across groups; an odd row out is
        dropped."""
        rng = random.Random(f"ltune.paraphrase:{self.seed}:{split}")
        groups: dict[Any, list[dict]] = {}
        for row in rows:
            groups.setdefault(row["group"], []).append(row)
        out, left = [], []
        for key in sorted(groups, key=str):
            members = groups[key]
            rng.shuffle(members)
            cut = len(members) - len(members) % 2
            out += members[:cut]
            left += members[cut:]
        out += left[: len(left) - len(left) % 2]
        if len(rows) % 2:
            log.warning("%s: %d rows; the one row without a partner is dropped", split, len(rows))
            self.stats.setdefault(split, {})["unpaired"] = 1
        return out

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split == "eval":
            return super()._loader(split, shuffle)
        data = self.data[split]
        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        if shuffle:
            sampler = PairSampler(data, world, rank, self.seed, self.batch_size)
            kw = {"batch_size": self.batch_size, "sampler": sampler}
            return ResumableLoader(
                data, self._batches_done, collate_fn=self.collate, num_workers=self.num_workers, **kw
            )
        sampler = _PairOrder(data, world, rank, shuffle=False)
        kw = {"batch_size": self.eval_batch_size, "sampler": sampler}
        return DataLoader(data, collate_fn=self.collate, num_workers=self.num_workers, **kw)

    def collate(self, examples: Sequence[dict]) -> dict[str, Any]:
        if "prompt_ids" in examples[0]:  # eval prompts
            return super().collate(examples)
        seqs = [e["sequences"][0] for e in examples] + [e["sequences"][1] for e in examples]
        input_ids, attention_mask = pad_right([s["input_ids"] for s in seqs], self.tokenizer.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": pad_right([s["labels"] for s in seqs], IGNORE_INDEX)[0],
            "category": [e["category"] for e in examples],
        }
