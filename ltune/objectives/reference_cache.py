"""Reference log-probs of preference pairs computed once, before fitting, and cached on disk (TRL's
``precompute_ref_log_probs``), so a DPO step runs one model instead of two.

Each pair is keyed by its tokens (the chosen and rejected ``input_ids`` and ``labels``, padding stripped): the key
changes with the row, the chat template, the system prompt, the tokenizer and the length policy, and does not depend
on the order or the subset a run trains on. A cache file holds the pairs of one dataset under one reference model;
its name is the SHA-256 of the sorted pair keys and the reference's configuration (the selection cache's rule), so a
changed row or model never reuses stale values. Files are JSON, written atomically (``ltune.io.atomic_write``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ltune.io import atomic_write_text


def pair_keys(batch: dict) -> list[str]:
    """One key per pair of a stacked ``[2B, T]`` preference batch: SHA-1 of both sequences' real tokens and labels."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"].bool(), batch["labels"]
    n = ids.shape[0] // 2
    keys = []
    for i in range(n):
        h = hashlib.sha1()
        for row in (i, n + i):
            for t in (ids[row][mask[row]], labels[row][mask[row]]):
                h.update(t.to(torch.int64).cpu().numpy().tobytes())
                h.update(b"|")
        keys.append(h.hexdigest())
    return keys


def cache_name(keys: Iterable[str], reference: dict[str, Any]) -> str:
    """File stem of the cache of these pairs under this reference configuration."""
    blob = json.dumps({"pairs": sorted(set(keys)), "reference": reference}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ReferenceLogps:
    """Summed response log-probs ``(chosen, rejected)`` of each pair under the reference, by pair key.

    Args:
        path: JSON file of the cache (read when it exists).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.values: dict[str, list[float]] = {}
        if self.path.is_file():
            self.values = json.loads(self.path.read_text())["pairs"]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def add(self, keys: list[str], chosen: Tensor, rejected: Tensor) -> None:
        for k, c, r in zip(keys, chosen.tolist(), rejected.tolist(), strict=True):
            self.values[k] = [c, r]

    def lookup(self, keys: list[str], device: torch.device | None = None) -> tuple[Tensor, Tensor] | None:
        """``([B], [B])`` float32 reference log-probs of the chosen and rejected responses, or ``None`` when a pair
        is missing."""
        if not all(k in self.values for k in keys):
            return None
        both = torch.tensor([self.values[k] for k in keys], dtype=torch.float32, device=device)
        return both[:, 0], both[:, 1]

    def save(self, meta: dict[str, Any]) -> Path:
        text = json.dumps({"meta": meta, "pairs": self.values}, sort_keys=True, default=str)
        return atomic_write_text(self.path, text)
