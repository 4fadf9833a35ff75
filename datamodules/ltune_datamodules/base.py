"""The base DataModule: load -> validate every row -> render (chat template) -> tokenize -> length policy -> batches.

A format subclass declares its fields and turns a validated row into sequences (``encode``). The base handles
sources, column mapping, validation errors that name the source, row and field, the length policy, samplers that
resume mid-epoch and shard across ranks, and padding.

Rendering and tokenization are :mod:`ltune.datamodules.encoding`; the length policy (``overlong``) is
:mod:`ltune.datamodules.length`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import lightning as L
from torch.utils.data import DataLoader

from ltune.datamodules.batching import (
    Batches,
    ResumableLoader,
    ResumableSampler,
    Shard,
    TokenBudgetSampler,
    pad_left,
    pad_right,
    row_tokens,
)
from ltune.datamodules.encoding import Encoding
from ltune.datamodules.length import Overlong, Policy
from ltune.datamodules.sources import DataError, SourceLike, as_source
from ltune.kernels import IGNORE_INDEX
from ltune.seeding import run_seed

log = logging.getLogger(__name__)


class LTuneData(Encoding, L.LightningDataModule):
    """Base DataModule. Subclasses set ``fields``/``optional`` and implement ``encode``.

    Args:
        train: Training rows: a file path, a Hugging Face dataset id, or a ``Source`` (e.g. ``EmbeddedTasks``).
        val: Validation rows in the same format (validation loss and format metrics).
        eval_prompts: Prompt/answer rows scored by greedy generation and exact match of the final answer.
        columns: Maps this format's field names onto your column names, e.g. ``{"prompt": "instruction"}``.
        template: How string rows become text. ``"chat"``: the model's chat template, the prompt as a user turn
            (plain when the tokenizer has none); ``"raw"``: as TRL tokenizes string rows, the prompt and the
            completion joined as they are (EOS appended, the tokenizer's own special tokens, no system message);
            ``"plain"``: each prompt message's text on its own line. Message rows always use the chat template.
        system: Optional system message put before every prompt (default: the backbone's ``system_prompt``).
        max_length: Longest sequence in tokens.
        overlong: Length policy: ``"truncate_prompt"`` (keep the end, cutting from the left after the system
            message), ``"keep_start"`` (cut the end: a conversation's, a text's, or the completion's) or ``"skip"``.
        batch_size: Rows per batch per device.
        batch_tokens: Tokens per training batch per device instead of a row count: rows are packed best-fit-decreasing
            into batches whose tokens (a row's: the sum of its sequences) sum to at most this, as TRL packs SFT data,
            so long-tailed data steps on a bounded size; ``batch_size`` then sets evaluation's batches only. None:
            ``batch_size`` rows per batch.
        eval_batch_size: Rows per validation batch (defaults to ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: Seed of the shuffling order (epoch ``e`` uses ``seed + e``); None: the run's seed (``seed_everything``).
    """

    fields: ClassVar[dict[str, type | tuple[type, ...]]] = {}
    optional: ClassVar[dict[str, type | tuple[type, ...]]] = {}
    keep_columns: ClassVar[bool] = False  # keep a row's undeclared columns (row["columns"]) and where it comes from

    def __init__(
        self,
        train: SourceLike | None = None,
        val: SourceLike | None = None,
        eval_prompts: SourceLike | None = None,
        columns: dict[str, str] | None = None,
        template: Literal["chat", "raw", "plain"] = "chat",
        system: str | None = None,
        max_length: int = 1024,
        overlong: Policy = "truncate_prompt",
        batch_size: int = 8,
        batch_tokens: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.sources = {"train": train, "val": val, "eval": eval_prompts}
        self.columns = dict(columns or {})
        self.template, self.system = template, system
        self.max_length, self.overlong = max_length, overlong
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        if batch_tokens is not None and batch_tokens < 1:
            raise ValueError(f"batch_tokens={batch_tokens} must be >= 1 (or null: batch_size rows per batch)")
        self.batch_tokens = batch_tokens
        self.num_workers, self.seed = num_workers, run_seed(seed)
        self.tokenizer = None  # set by the user, or taken from the LightningModule in setup()
        self.default_system: str | None = None  # the backbone's prompt style, taken with the tokenizer
        self.data: dict[str, list[dict]] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self._truncated = 0  # rows the length policy cut, counted per split by _encode_all

    # ---- loading and validation -------------------------------------------------------------------------------
    def load_rows(
        self, spec: SourceLike, fields: dict, optional: dict, check: Callable[[dict], str | None] | None = None
    ) -> list[dict]:
        """Load a source, map columns, and validate every row; raise ``DataError`` naming source, row and field."""
        source = as_source(spec)
        ds = source.load()
        errors, rows = [], []
        for i, raw in enumerate(ds, start=1):
            row, err = self._validate(raw, fields, optional)
            if self.keep_columns:
                row["source_row"] = f"{source.name}: row {i}"  # for messages about this row during training
            err = err or (check(row) if check else None)
            if err:
                errors.append(f"{source.name}: row {i}: {err}")
            rows.append(row)
        if errors:
            more = f" (and {len(errors) - 1} more bad rows)" if len(errors) > 1 else ""
            raise DataError(errors[0] + more)
        if not rows:
            raise DataError(f"{source.name}: no rows")
        return rows

    def _validate(self, raw: dict, fields: dict, optional: dict) -> tuple[dict, str | None]:
        row = {}
        if self.keep_columns:  # the row's other columns, by their own names (reward functions read them)
            used = {self.columns.get(f, f) for f in (*fields, *optional)}
            row["columns"] = {k: v for k, v in raw.items() if k not in used}
        for name, kind in [*((f, t) for f, t in fields.items()), *((f, t) for f, t in optional.items())]:
            col = self.columns.get(name, name)
            value = raw.get(col)
            if value is None:
                if name in fields:
                    return row, f"field '{name}' (column '{col}') is missing"
                continue
            if not isinstance(value, kind):
                want = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
                return row, f"field '{name}' (column '{col}') is {type(value).__name__}, expected {want}"
            if isinstance(value, str) and not value.strip() and name in fields:
                return row, f"field '{name}' (column '{col}') is empty"
            row[name] = value
        return row, None

    def check(self, row: dict) -> str | None:
        """Format-specific validation of a row; return an error message (without the row prefix) or ``None``."""
        return None

    # ---- the model side ---------------------------------------------------------------------------------------
    def adopt(self, lm: Any) -> None:
        """Take the tokenizer and the backbone's prompt style (``system_prompt``) from the LightningModule that trains
        on this data: the one link from the model side to the data side (a DataModule used alone gets ``tokenizer``
        and, optionally, ``default_system`` set by hand)."""
        if lm is None or not hasattr(lm, "tokenizer"):
            raise RuntimeError("set `datamodule.tokenizer`, or fit with an ltune objective that provides one")
        self.tokenizer = lm.tokenizer
        self.default_system = getattr(getattr(lm, "backbone", None), "system_prompt", None)

    def system_message(self) -> str | None:
        """The system message prompts are rendered with: this data's ``system``, else the backbone's prompt style."""
        return self.system or self.default_system

    def encode(self, row: dict) -> dict[str, Any]:
        """Turn a validated row into model inputs. Implemented by each format."""
        raise NotImplementedError

    # ---- setup --------------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            self.adopt(self.trainer.lightning_module if self.trainer is not None else None)
        for split in ("train", "val"):
            if self.sources[split] is not None and split not in self.data:
                rows = self.load_rows(self.sources[split], self.fields, self.optional, self.check)
                self.data[split] = self._encode_all(split, rows, self.encode)
        if self.sources["eval"] is not None and "eval" not in self.data:
            rows = self.load_rows(self.sources["eval"], {"prompt": (str, list), "answer": str}, {"category": str})
            self.data["eval"] = self._encode_all("eval", rows, self.encode_eval)

    def encode_eval(self, row: dict) -> dict[str, Any]:
        return {
            "prompt_ids": self.encode_prompt(row["prompt"]),
            "answer": row["answer"],
            "category": row.get("category", "all"),
        }

    def _encode_all(self, split: str, rows: list[dict], fn: Callable[[dict], dict]) -> list[dict]:
        self._truncated, skipped, out = 0, 0, []
        for i, row in enumerate(rows, start=1):
            try:
                out.append(fn(row))
            except Overlong:
                skipped += 1
            except DataError as e:  # a row the template cannot render as asked: name it
                where = as_source(self.sources[split]).name if self.sources.get(split) is not None else split
                raise DataError(f"{where}: row {i}: {e}") from None
        self.stats[split] = {"rows": len(rows), "kept": len(out), "skipped": skipped, "truncated": self._truncated}
        if skipped or self._truncated:
            log.warning(
                "%s: %d of %d rows exceed max_length=%d: %d truncated (overlong=%s), %d rows skipped",
                split,
                skipped + self._truncated,
                len(rows),
                self.max_length,
                self._truncated,
                self.overlong,
                skipped,
            )
        if not rows:
            raise DataError(f"{split}: no rows to encode (an empty source, or a selection or round that kept none)")
        if not out:
            raise DataError(f"{split}: every row was skipped by the length policy (max_length={self.max_length})")
        return out

    # ---- batching -----------------------------------------------------------------------------------------------
    def collate(self, examples: Sequence[dict]) -> dict[str, Any]:
        """Right-pad token sequences; left-pad ``prompt_ids`` (for generation); keep other keys as lists."""
        batch: dict[str, Any] = {}
        pad = self.tokenizer.pad_token_id
        for key in examples[0]:
            values = [e[key] for e in examples]
            if key == "prompt_ids":
                batch["prompt_ids"], batch["prompt_mask"] = pad_left(values, pad)
            elif key.endswith("input_ids"):
                batch[key], batch[key.replace("input_ids", "attention_mask")] = pad_right(values, pad)
            elif key.endswith("labels"):
                batch[key] = pad_right(values, IGNORE_INDEX)[0]
            else:
                batch[key] = values
        return batch

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.data[split]
        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        if shuffle and self.batch_tokens:
            sizes = [row_tokens(e) for e in data]
            sampler = TokenBudgetSampler(sizes, world, rank, self.seed, self.batch_tokens)
            return ResumableLoader(
                Batches(data),
                self._batches_done,
                batch_size=None,
                sampler=sampler,
                collate_fn=self.collate,
                num_workers=self.num_workers,
            )
        if shuffle:
            sampler = ResumableSampler(data, world, rank, self.seed, self.batch_size)
            return ResumableLoader(
                data,
                self._batches_done,
                batch_size=self.batch_size,
                sampler=sampler,
                collate_fn=self.collate,
                num_workers=self.num_workers,
            )
        return DataLoader(
            data,
            batch_size=self.eval_batch_size,
            sampler=Shard(data, world, rank),
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def _batches_done(self) -> int:
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(s, shuffle=False) for s in ("val", "eval") if s in self.data]

    def set_train_rows(self, rows: list[dict]) -> None:
        """Replace the training set with new (validated, encoded here) rows; used by self-training callbacks."""
        self.data["train"] = self._encode_all("train", rows, self.encode)


def with_input(instruction: str, row: dict) -> str:
    """Alpaca layout: the row's optional ``input`` appended to an instruction after a blank line."""
    extra = row.get("input") or ""
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction
