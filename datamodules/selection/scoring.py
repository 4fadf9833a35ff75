"""Scoring machinery shared by the selection strategies: DDP rank lookup, length-sorted batches whose failures name
the row, and reassembly of rank-sharded scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

SKIPPED = "skipped"  # optional boolean score array: rows excluded by the strategy's documented policy


class ScoringError(RuntimeError):
    """A scorer failed on a row (or produced a non-finite score); the message names the source and the row."""


def rank() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def batched(n: int, lengths: list[int], fn: Callable[[list[int]], dict[str, np.ndarray]], names: list[str], desc: str,
            batch_size: int, progress: bool) -> dict[str, np.ndarray]:  # fmt: skip
    """Run ``fn`` over length-sorted batches of ``range(n)`` and return its arrays in row order.

    When a batch raises, its rows are retried one at a time so that the error names the failing row.
    """
    from tqdm.auto import tqdm

    order = sorted(range(n), key=lambda i: -lengths[i])
    out: dict[str, np.ndarray] = {}
    bar = tqdm(total=n, desc=desc, disable=not (progress and rank()[0] == 0), leave=False)
    for s in range(0, n, batch_size):
        batch = order[s : s + batch_size]
        try:
            res = fn(batch)
        except Exception:
            for i in batch:
                try:
                    fn([i])
                except Exception as err:
                    raise ScoringError(f"{names[i]}: scoring failed: {err!r}") from err
            raise
        for name, values in res.items():
            values = np.asarray(values)
            if name not in out:
                out[name] = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
            out[name][batch] = values
        bar.update(len(batch))
    bar.close()
    return out


def gather_shards(part: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Every rank's scores of rows ``rank::world`` reassembled into all ``n`` rows, on every rank."""
    _, world = rank()
    if world == 1:
        return part
    parts = [None] * world
    torch.distributed.all_gather_object(parts, part)
    out = {}
    for name in parts[0]:
        first = parts[0][name]
        arr = np.empty((n, *first.shape[1:]), dtype=first.dtype)
        for r, p in enumerate(parts):
            arr[r::world] = p[name]
        out[name] = arr
    return out


def render_each(rows: list[dict], names: list[str], encode: Callable[[dict], Any], what: str):
    """``encode(row)`` for every row: an over-long row (``Overlong``) gives ``None`` and is flagged in the returned
    ``skipped`` mask (the length policy); any other failure is a :class:`ScoringError` naming the row."""
    from ltune.datamodules.base import Overlong

    out, skipped = [], np.zeros(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        try:
            out.append(encode(row))
        except Overlong:
            out.append(None)
            skipped[i] = True
        except Exception as err:
            raise ScoringError(f"{names[i]}: could not be rendered for {what}: {err}") from err
    return out, skipped
