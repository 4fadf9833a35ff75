"""The selection base: a DataModule that wraps a candidate pool (any ltune format), scores its training rows, keeps
a budget, and then serves the pool's batches with only the kept rows.

Flow (``setup`` under a Trainer, or :meth:`Selection.select` alone, as ``ltune select`` does):
load and validate the pool's train rows -> scores from the cache, or computed in chunks of ``score_chunk`` rows (each
cached as it finishes: a killed run resumes there), in length-sorted batches sharded over the DDP ranks (progress bar
on rank 0), then cached whole -> ``choose`` the budget -> CSV report + histogram PNG (logged to W&B when a W&B logger
is attached) -> ``pool.set_train_rows(kept rows)``.

Budget semantics are explicit everywhere: an ``int`` is a number of rows, a ``float`` in (0, 1] is a fraction of the
*original* pool size (before any filter of the strategy). A scorer that fails on a row raises :class:`ScoringError`
naming the source and the row (1-based); rows a strategy skips by its documented policy (e.g. over-long rows for
IFD) are counted in the report, never given a default score.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ltune.datamodules.base import LTuneData, Overlong, with_input
from ltune.datamodules.selection.cache import ScoreCache, config_key, fingerprint
from ltune.datamodules.selection.report import write_selection_report
from ltune.datamodules.selection.scoring import SKIPPED, ScoringError, batched, gather_shards, rank, score_in_chunks
from ltune.datamodules.sources import DataError, as_source
from ltune.io import atomic_write_text

if TYPE_CHECKING:
    from ltune.backbone import Backbone

log = logging.getLogger(__name__)


def resolve_budget(budget: int | float, n: int) -> int:
    """Rows to keep out of an original pool of ``n``: an int is a count, a float in (0, 1] a fraction of ``n``."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise ValueError(f"budget must be an int (rows) or a float in (0, 1] (fraction), got {budget!r}")
    if isinstance(budget, float):
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"a fractional budget must be in (0, 1], got {budget}")
        return max(1, int(budget * n))
    if budget < 1:
        raise ValueError(f"a row budget must be >= 1, got {budget}")
    return min(budget, n)


def pair_text(row: dict) -> tuple[str | list[dict], str]:
    """(prompt, response) that a strategy scores, for instruction rows (prompt/response with optional input, or
    messages ending with the assistant turn) and preference rows (prompt + chosen)."""
    if "messages" in row:
        return row["messages"][:-1], row["messages"][-1]["content"]
    if "chosen" in row:
        chosen = row["chosen"]
        if isinstance(chosen, list):
            return chosen[:-1], chosen[-1]["content"]
        return row["prompt"], chosen
    prompt = with_input(row["prompt"], row)
    return prompt, row["completion"] if "completion" in row else row["response"]


def instruction_text(row: dict) -> str:
    """The instruction alone (prompt plus input, or the user turns), for embeddings and complexity scorers."""
    prompt, _ = pair_text(row)
    if isinstance(prompt, list):
        return "\n".join(m["content"] for m in prompt if m["role"] == "user")
    return prompt


class Selection(LTuneData):
    """Base of the selection strategies: wraps a pool DataModule, scores its train rows, keeps a budget.

    Subclasses implement :meth:`score` (arrays with one entry per row) and :meth:`choose` (indices of kept rows),
    and extend :meth:`scorer_config` with every parameter the scores depend on.

    Args:
        pool: The candidate pool: a DataModule of any format (``InstructionData``, ``PreferenceData``, ...) whose
            ``train`` rows are scored; its ``val``/``eval_prompts`` and batching are used unchanged.
        budget: Rows to keep: an int is a count, a float in (0, 1] a fraction of the original pool size.
        cache_dir: Folder of the score cache (keyed by data fingerprint + scorer configuration).
        report_dir: Folder of ``selection.csv`` / ``selection.png``; default ``<trainer log dir>/selection`` or
            ``runs/select/<strategy>`` without a trainer.
        score_batch_size: Rows per scoring forward.
        score_chunk: Rows per resumable scoring chunk: each finished chunk is cached at once, and a run killed while
            scoring rescores only the chunks it had not finished (strategies that score the whole pool at once, and
            uncached ones, score in one chunk).
        progress: Show a progress bar while scoring (rank 0 only).
    """

    cached = True  # strategies whose scores are free to recompute set this to False
    sharded = True  # False: every rank scores all rows (a strategy whose scores depend on the whole pool)
    budget_is_cap = False  # True: the strategy decides the size; the budget only caps it (no shortfall warning)

    def __init__(
        self,
        pool: LTuneData,
        budget: int | float = 0.1,
        cache_dir: str = "runs/selection_cache",
        report_dir: str | None = None,
        score_batch_size: int = 16,
        score_chunk: int = 4096,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.pool, self.budget = pool, budget
        self.cache = ScoreCache(cache_dir)
        self.report_dir, self.score_batch_size, self.progress = report_dir, score_batch_size, progress
        self.score_chunk = score_chunk
        self.backbone = None  # the trained objective's backbone (taken in setup; strategies may score with it)
        self.selected: list[int] | None = None
        self.scores: dict[str, np.ndarray] | None = None

    # ---- what a strategy defines ------------------------------------------------------------------------------
    def scorer_config(self) -> dict[str, Any]:
        """Everything the scores depend on besides the rows (extend in subclasses; the budget is not included)."""
        p = self.pool
        return {
            "strategy": type(self).__name__,
            "template": p.template,
            "system": self.system_message(),
            "pool": type(p).__name__,
        }

    def score(self, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
        """Score ``rows`` (this rank's shard); ``names`` are their labels for error messages."""
        raise NotImplementedError

    def choose(self, scores: dict[str, np.ndarray], k: int) -> np.ndarray:
        """Indices of the kept rows (at most ``k``), in the order they are kept."""
        raise NotImplementedError

    def cut(self, scores: dict[str, np.ndarray], selected: np.ndarray) -> tuple[str, float | None]:
        """Score column drawn in the histogram and the threshold marked on it (``None``: no single threshold)."""
        name = next(k for k in scores if k != SKIPPED and scores[k].ndim == 1)
        return name, float(scores[name][selected].min()) if len(selected) else None

    # ---- the flow -----------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        lm = self.trainer.lightning_module if self.trainer is not None else None
        if self.tokenizer is None:
            self.adopt(lm)
        elif self.backbone is None and lm is not None:
            self.backbone = getattr(lm, "backbone", None)
        self.pool.trainer = self.trainer
        if self.selected is None and self.pool.sources["train"] is not None:
            self.select()
        self.pool.setup(stage)

    def select(self) -> list[dict]:
        """Load, score (or read the cache), choose and report; sets the pool's train rows. Returns the kept rows."""
        pool = self.pool
        if pool.tokenizer is None:
            pool.tokenizer, pool.default_system = self.tokenizer, self.default_system
        source = as_source(pool.sources["train"])
        rows = pool.load_rows(source, pool.fields, pool.optional, pool.check)
        self.source_name, n = source.name, len(rows)
        config = self.scorer_config()
        key = config_key(fingerprint(rows), config) if self.cached else None
        size = self.score_chunk if self.sharded else max(n, 1)  # unsharded scores depend on the whole pool
        meta = {"source": source.name, "rows": n, "scorer": config}
        start = time.perf_counter()
        scores, scored = score_in_chunks(
            n, lambda idx: self._score_sharded(rows, idx), size, self.cache, key, self._check_finite, meta
        )
        seconds = time.perf_counter() - start  # the cost of scoring the `scored` rows not found in the cache
        selected = self.keep(scores, n)
        self.scores, self.selected = scores, selected.tolist()
        if rank()[0] == 0:
            rate = round(scored / max(seconds, 1e-9), 1) if scored else None  # None: every score came from the cache
            cost = {"rows": n, "scored": scored, "seconds": round(seconds, 2), "rows_per_s": rate}
            atomic_write_text(self.output_dir() / "scoring.json", json.dumps(cost) + "\n")
            log.info(
                "%s scored %d of %d rows in %.1f s (%s rows/s; the rest from the cache)",
                type(self).__name__,
                scored,
                n,
                seconds,
                rate,
            )
        if not len(selected):
            name, threshold = self.cut(scores, selected)
            values = scores[name][np.isfinite(scores[name])]
            spread = f"scores from {values.min():.4g} to {values.max():.4g}" if len(values) else "no finite score"
            raise DataError(
                f"{self.source_name}: {type(self).__name__} kept none of {n} rows: none passed the cut on "
                f"'{name}' ({threshold}; {spread}); loosen the threshold or use a scorer that separates "
                f"the rows (report: {self.output_dir()})"
            )
        self.rows = rows
        kept = [rows[i] for i in self.selected]
        pool.set_train_rows(kept)
        return kept

    def keep(self, scores: dict[str, np.ndarray], n: int, report_dir: str | Path | None = None) -> np.ndarray:
        """The indices this strategy keeps of ``n`` scored rows (its ``choose`` within the budget), with the report
        written (rank 0) to ``report_dir`` (default :meth:`output_dir`). ``select`` ends here, and so do rounds that
        score the pool themselves (Cherry's pre-experienced stage)."""
        k = resolve_budget(self.budget, n)
        selected = np.asarray(self.choose(scores, k), dtype=np.int64)
        if len(selected) < k and not self.budget_is_cap:
            log.warning(
                "%s kept %d rows, fewer than the budget %d (the rest were filtered)",
                type(self).__name__,
                len(selected),
                k,
            )
        if rank()[0] == 0:
            self.report(scores, selected, n, report_dir)
        return selected

    def _score_sharded(self, rows: list[dict], idx: list[int]) -> dict[str, np.ndarray]:
        """Score rows ``idx`` (a chunk): ``idx[rank::world]`` on each rank, reassembled on every rank."""
        mine = idx[rank()[0] :: rank()[1]] if self.sharded else idx
        part = self.score([rows[i] for i in mine], [self.row_name(i) for i in mine])
        return gather_shards(part, len(idx)) if self.sharded else part

    def row_name(self, i: int) -> str:
        return f"{getattr(self, 'source_name', 'pool')}: row {i + 1}"

    def _check_finite(self, scores: dict[str, np.ndarray], start: int = 0) -> None:
        skipped = scores.get(SKIPPED)
        for name, arr in scores.items():
            if name == SKIPPED or not np.issubdtype(arr.dtype, np.floating):
                continue
            bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(1)
            if skipped is not None:
                bad &= ~skipped
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ScoringError(f"{self.row_name(start + i)}: score '{name}' is {arr[i]}, not finite (no default)")

    # ---- helpers for scorers ------------------------------------------------------------------------------------
    def batched(
        self, n: int, lengths: list[int], fn: Callable[[list[int]], dict[str, np.ndarray]], names: list[str], desc: str
    ) -> dict[str, np.ndarray]:
        """Run ``fn`` over length-sorted batches of ``score_batch_size`` rows; a failing row is named."""
        return batched(n, lengths, fn, names, desc, self.score_batch_size, self.progress)

    def renderer(self, tokenizer, max_length: int | None = None) -> LTuneData:
        """The pool's prompt format (template, system message or the backbone's prompt style) with another tokenizer
        (e.g. a scorer's), skipping over-long rows: ``encode_pair`` raises :class:`Overlong` for them."""
        r = LTuneData(
            template=self.pool.template,
            system=self.system_message(),
            overlong="skip",
            max_length=max_length or self.pool.max_length,
        )
        r.tokenizer, r._truncated = tokenizer, 0
        return r

    def adopt(self, lm: Any) -> None:
        """As :meth:`LTuneData.adopt`, and keep the objective's backbone (strategies may score with it)."""
        super().adopt(lm)
        self.backbone = getattr(lm, "backbone", None)

    def system_message(self) -> str | None:
        """The system message the pool's rows are rendered with: the pool's own, else the backbone's prompt style."""
        return self.pool.system_message() or self.default_system

    def scoring_backbone(self, scorer: Backbone | None, keep_lora: bool = False) -> Backbone:
        """The model a strategy scores with: ``scorer``, else the trained objective's backbone at its initial weights;
        without its LoRA settings unless ``keep_lora`` (a fresh adapter is an identity)."""
        bb = scorer or self.backbone
        if bb is None:
            raise RuntimeError(
                f"{type(self).__name__} needs a scorer backbone, or a trained objective to take one from"
            )
        return bb if keep_lora else dataclasses.replace(bb, lora=None)

    def device(self) -> torch.device:
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # ---- report -------------------------------------------------------------------------------------------------
    def output_dir(self) -> Path:
        if self.report_dir:
            return Path(self.report_dir)
        if self.trainer is not None and self.trainer.log_dir:
            return Path(self.trainer.log_dir) / "selection"
        return Path("runs/select") / type(self).__name__.lower()

    def report(
        self, scores: dict[str, np.ndarray], selected: np.ndarray, n: int, report_dir: str | Path | None = None
    ) -> tuple[Path, Path]:
        """Write ``selection.csv`` (index, 1-D scores, selected) and ``selection.png`` (histogram, cut marked) to
        ``report_dir`` (default :meth:`output_dir`)."""
        loggers = self.trainer.loggers if self.trainer is not None else []
        out, cut = Path(report_dir) if report_dir else self.output_dir(), self.cut(scores, selected)
        return write_selection_report(out, scores, selected, n, cut, type(self).__name__, SKIPPED, loggers)

    def embed_texts(self, texts: list[str], names: list[str], embedder: Backbone | None, desc: str) -> np.ndarray:
        """``[N, D]`` float32 embeddings (see :func:`ltune.datamodules.selection.embed.embed_texts`)."""
        from ltune.datamodules.selection.embed import embed_texts

        return embed_texts(texts, names, embedder, self.device(), self.batched, self.pool.max_length, desc)

    # ---- batches come from the pool -------------------------------------------------------------------------------
    def set_train_rows(self, rows: list[dict]) -> None:
        """Replace the pool's training rows (self-training rounds call this on the DataModule)."""
        self.pool.set_train_rows(rows)

    def train_dataloader(self):
        return self.pool.train_dataloader()

    def val_dataloader(self):
        return self.pool.val_dataloader()

    def collate(self, examples):
        return self.pool.collate(examples)


__all__ = ["DataError", "Overlong", "ScoringError", "Selection", "instruction_text", "pair_text", "resolve_budget"]
