"""On-disk score cache, keyed by the dataset fingerprint and the scorer's configuration, written atomically.

A key is the SHA-256 of (fingerprint of every validated row, in order) + (the scorer configuration as sorted JSON:
strategy, scorer model, prompt template, max length, method parameters). Changing any row, the template or a
parameter gives a new key, so stale scores are never reused; the same inputs reuse the file. Files are written to a
temporary name in the same folder and renamed (``os.replace``), so a crash never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
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


def config_key(fingerprint: str, config: dict[str, Any]) -> str:
    """Cache key of a dataset fingerprint and a scorer configuration."""
    blob = json.dumps({"data": fingerprint, "scorer": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ScoreCache:
    """A folder of ``<key>.npz`` score files (one array per score name) with a ``<key>.json`` sidecar.

    Args:
        root: Cache folder (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The cached arrays, or ``None`` when absent."""
        path = self.path(key)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as f:
            return {name: f[name] for name in f.files}

    def save(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> Path:
        """Write ``arrays`` (and ``meta`` as JSON beside them) atomically; returns the file path."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        atomic_write(path, lambda f: np.savez(f, **arrays))
        if meta is not None:
            text = json.dumps(meta, sort_keys=True, indent=1, default=str).encode()
            atomic_write(path.with_suffix(".json"), lambda f: f.write(text))
        return path
