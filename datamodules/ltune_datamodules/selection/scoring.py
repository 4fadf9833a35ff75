"""Scoring machinery shared by the selection strategies: DDP rank lookup, resumable scoring in chunks, length-sorted
batches whose failures name the row, and reassembly of rank-sharded scores."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ltune.datamodules.selection.cache import ScoreCache

log = logging.getLogger(__name__)

SKIPPED = "skipped"  # optional boolean score array: rows excluded by the strategy's documented policy


class ScoringError(RuntimeError):
    """A scorer failed on a row (or produced a non-finite score); the message names the source and the row."""


def rank() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def agreed(arrays: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    """``arrays`` (read from the cache) when every rank has them, else ``None`` on every rank: all ranks must take
    the same path, or the collectives of scoring would hang."""
    _, world = rank()
    if world > 1:
        hits = [None] * world
        torch.distributed.all_gather_object(hits, arrays is not None)
        if not all(hits):
            return None
    return arrays


def score_in_chunks(
    n: int,
    score: Callable[[list[int]], dict[str, np.ndarray]],
    size: int,
    cache: ScoreCache,
    key: str | None,
    check: Callable[[dict[str, np.ndarray], int], None],
    meta: dict[str, Any],
) -> tuple[dict[str, np.ndarray], int]:
    """Scores of rows ``0..n-1`` and how many of them were scored now (the rest came from the cache): the cache entry
    ``key`` when every rank reads it, else computed ``size`` rows at a time (chunk bounds do not depend on the rank
    layout) and then cached whole, with ``meta`` beside them.

    Each finished chunk is checked (``check(arrays, start)``) and written atomically by rank 0 as
    ``cache.chunk_path(key, start, stop)``; a run killed mid-way and started again loads the chunks already written
    and scores only the missing ones, so no row is scored twice and the result equals an uninterrupted run's. Logs
    ``"selection scoring: N rows scored, M from cache"``. With ``key=None`` nothing is read or written (one chunk).

    Args:
        n: Rows in the pool.
        score: Arrays (one entry per row, on every rank) of the given row indices.
        size: Rows per chunk (give ``n`` when the scores of a row depend on the whole pool).
        cache: The score cache.
        key: Cache key of the pool's scores, or ``None``.
        check: Raises on a bad chunk (e.g. a non-finite score) before it is written.
        meta: JSON written beside the finished entry.
    """
    if key is not None and (scores := agreed(cache.load(key))) is not None:
        log.info("selection scores read from the cache %s", cache.path(key))
        return scores, 0
    parts, reused = [], 0
    for start in range(0, max(n, 1), size if key is not None else max(n, 1)):
        stop = min(start + size, n)
        part = agreed(cache.load_chunk(key, start, stop)) if key is not None else None
        if part is not None:
            reused += stop - start
        else:
            part = score(list(range(start, stop)))
            check(part, start)
            if key is not None and rank()[0] == 0:
                cache.save_chunk(key, start, stop, part)
        parts.append(part)
    log.info("selection scoring: %d rows scored, %d from cache", n - reused, reused)
    scores = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    if key is not None and rank()[0] == 0:
        cache.save(key, scores, meta)  # the whole entry replaces the chunks
    return scores, n - reused


def batched(
    n: int,
    lengths: list[int],
    fn: Callable[[list[int]], dict[str, np.ndarray]],
    names: list[str],
    desc: str,
    batch_size: int,
    progress: bool,
) -> dict[str, np.ndarray]:
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
