"""On-disk score cache, keyed by the dataset fingerprint and the scorer's configuration, written atomically.

A key is the SHA-256 of (fingerprint of every validated row, in order) + (the scorer configuration as sorted JSON:
strategy, scorer model, prompt template, max length, method parameters). Changing any row, the template or a
parameter gives a new key, so stale scores are never reused; the same inputs reuse the file. Files are written to a
temporary name in the same folder and renamed (``os.replace``), so a crash never leaves a half-written cache.

Layout: ``<key>.npz`` + ``<key>.json`` hold a finished pool's scores. While a pool is being scored, each finished chunk
of rows ``[start, stop)`` is ``<key>/rows_<start>-<stop>.npz`` (``scoring.score_in_chunks``), so a killed run resumes
from the chunks it finished; writing ``<key>.npz`` removes the ``<key>/`` folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ltune.io import atomic_write


def fingerprint(rows: list[dict]) -> str:
    """SHA-256 of the rows (order included) as canonical JSON."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _stable(value: Any) -> Any:
    """JSON for what ``json`` cannot write: sets sorted (their order varies by process), anything else ``str``."""
    return sorted(value, key=str) if isinstance(value, (set, frozenset)) else str(value)


def config_key(fingerprint: str, config: dict[str, Any]) -> str:
    """Cache key of a dataset fingerprint and a scorer configuration."""
    blob = json.dumps({"data": fingerprint, "scorer": config}, sort_keys=True, default=_stable)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ScoreCache:
    """A folder of ``<key>.npz`` score files (one array per score name) with a ``<key>.json`` sidecar, and ``<key>/``
    folders of the chunks of a pool whose scoring has not finished.

    Args:
        root: Cache folder (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def chunk_path(self, key: str, start: int, stop: int) -> Path:
        """File of the finished chunk of rows ``[start, stop)`` (the bounds name it: another chunk size never
        matches)."""
        return self.root / key / f"rows_{start:09d}-{stop:09d}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The cached arrays, or ``None`` when absent."""
        return _read(self.path(key))

    def load_chunk(self, key: str, start: int, stop: int) -> dict[str, np.ndarray] | None:
        """The arrays of a finished chunk, or ``None`` when it has not been written."""
        return _read(self.chunk_path(key, start, stop))

    def save_chunk(self, key: str, start: int, stop: int, arrays: dict[str, np.ndarray]) -> Path:
        """Write the arrays of the chunk of rows ``[start, stop)`` atomically; returns the file path."""
        return atomic_write(self.chunk_path(key, start, stop), lambda f: np.savez(f, **arrays))

    def save(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> Path:
        """Write ``arrays`` (and ``meta`` as JSON beside them) atomically, then remove the key's chunks (the entry
        holds them all); returns the file path."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        atomic_write(path, lambda f: np.savez(f, **arrays))
        if meta is not None:
            text = json.dumps(meta, sort_keys=True, indent=1, default=str).encode()
            atomic_write(path.with_suffix(".json"), lambda f: f.write(text))
        shutil.rmtree(self.root / key, ignore_errors=True)
        return path


def _read(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        return {name: f[name] for name in f.files}
