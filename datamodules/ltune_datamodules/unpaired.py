"""What unpaired preference data (KTO's) needs beyond prompt-completion rows: paired rows unpaired, as TRL's
``unpair_preference_dataset`` does, and the mismatched completion of each row that KTO's KL estimate scores."""

from __future__ import annotations

import random
from typing import Any

import datasets

from ltune.datamodules.preference import PreferenceData
from ltune.datamodules.sources import DataError, Source
from ltune.kernels import IGNORE_INDEX


class MaybeUnpaired(Source):
    """A source's rows as unpaired preference rows: rows with ``chosen`` and ``rejected`` (and no ``completion``), in
    any layout :class:`~ltune.datamodules.PreferenceData` reads (explicit or implicit prompt, strings or messages),
    become two rows each, ``(prompt, chosen, label=True)`` and ``(prompt, rejected, label=False)``: all the desirable
    rows first, then all the undesirable ones, ``answer`` and ``category`` copied (TRL unpairs the same way), and
    ``pair``, the index of the pair both came from (validation scores held-out pairs with it). Other sources pass
    through unchanged.

    Args:
        source: The rows.
        columns: The DataModule's column mapping (its ``prompt``, ``completion``, ``label``, ``chosen`` and
            ``rejected`` entries are used).
    """

    def __init__(self, source: Source, columns: dict[str, str] | None = None) -> None:
        self.source, self.columns = source, dict(columns or {})
        self.paired = False

    @property
    def name(self) -> str:
        return f"{self.source.name} (unpaired)" if self.paired else self.source.name

    def load(self) -> datasets.Dataset:
        ds = self.source.load()
        col = lambda f: self.columns.get(f, f)  # noqa: E731
        if col("completion") in ds.column_names or not {col("chosen"), col("rejected")} <= set(ds.column_names):
            return ds
        pairs = PreferenceData(columns=self.columns)
        rows = pairs.load_rows(_Loaded(ds, self.source.name), pairs.fields, pairs.optional, pairs.check)
        self.paired = True
        out: list[dict[str, Any]] = []
        for label, key in ((True, "chosen"), (False, "rejected")):
            for i, row in enumerate(rows):
                extra = {k: row[k] for k in ("answer", "category") if k in row}
                unpaired = {col("prompt"): row["prompt"], col("completion"): row[key], col("label"): label}
                out.append({**extra, **unpaired, col("pair"): i})
        return datasets.Dataset.from_list(out)


class _Loaded(Source):
    """Rows already loaded, under their source's name."""

    def __init__(self, ds: datasets.Dataset, name: str) -> None:
        self.ds, self._name = ds, name

    @property
    def name(self) -> str:
        return self._name

    def load(self) -> datasets.Dataset:
        return self.ds


def kl_partners(n: int, seed: int, split: str) -> list[int]:
    """For each of ``n`` rows the index of the row whose completion its KL sequence takes: one seeded random cycle
    through all rows (row ``order[k]`` takes the completion of ``order[k + 1]``), so no row takes its own and every
    completion is used once, whatever the batch size and the sampling order."""
    if n < 2:
        raise DataError(
            f"{split}: KTO's KL estimate pairs each row with another row's completion: give at least 2 rows"
        )
    order = list(range(n))
    random.Random(f"ltune.kto.kl:{seed}:{split}").shuffle(order)
    partner = [0] * n
    for k, i in enumerate(order):
        partner[i] = order[(k + 1) % n]
    return partner


def with_kl_sequences(rows: list[dict], partners: list[int], max_length: int) -> list[dict]:
    """Encoded rows with ``KL_input_ids``/``KL_labels``: the row's prompt (its tokens before the first trained one)
    followed by its partner's completion (the partner's tokens from its first trained one on), cut at the end to
    ``max_length`` (TRL splices ``prompt_ids + KL_completion_ids`` the same way and keeps the start)."""
    starts = [next((i for i, t in enumerate(r["labels"]) if t != IGNORE_INDEX), len(r["labels"])) for r in rows]
    out = []
    for row, start, j in zip(rows, starts, partners, strict=True):
        other, s = rows[j], starts[j]
        ids = row["input_ids"][:start] + other["input_ids"][s:]
        labels = [IGNORE_INDEX] * start + other["labels"][s:]
        out.append({**row, "KL_input_ids": ids[:max_length], "KL_labels": labels[:max_length]})
    return out
