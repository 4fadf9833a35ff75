"""Pairs of responses with a soft preference label, for reward models; unlabeled pairs are labeled by an AI judge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ltune.datamodules.base import LTuneData
from ltune.datamodules.sources import DataError, as_source
from ltune.io import atomic_write_text
from ltune.judges import PairJudge


class PairwiseData(LTuneData):
    """Rows ``prompt``, ``response_a``, ``response_b`` and ``preference`` = P(response_a is preferred) in [0, 1]
    (soft AI labels; 0/1 for hard labels). Batches carry right-padded ``a_input_ids``/``b_input_ids`` with their
    attention masks and the ``preference`` floats.

    Rows without ``preference`` are labeled at setup by ``judge`` (RLAIF's AI labeler, e.g. ``ltune.judges.LMJudge``)
    and the labeled rows are written to ``labels_path`` (jsonl, atomically; the train split's, other splits beside it
    as ``<stem>.<split>.jsonl``), which later runs read back instead of asking the judge again when they hold the
    same pairs. The judge's figures (``labeled`` rows, ``p_first_position``: its position bias before debiasing,
    ``entropy`` of the labels) go to the trainer's loggers as ``labeler/<name>`` and to ``<stem>.metrics.json``.
    Map other column names with ``columns``, e.g. ``{response_a: chosen, response_b: rejected}`` for preference rows.

    Args:
        judge: AI labeler for unlabeled rows; None requires a ``preference`` on every row.
        labels_path: Where the train split's AI-labeled rows are cached (None: not cached); ``val`` goes to
            ``<stem>.val<suffix>`` beside it.
        **kwargs: Arguments of :class:`~ltune.datamodules.base.LTuneData`.
    """

    fields = {"prompt": (str, list), "response_a": str, "response_b": str}
    optional = {"preference": (float, int), "category": str}

    def __init__(self, *args: Any, judge: PairJudge | None = None, labels_path: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.judge, self.labels_path = judge, labels_path
        self.judge_metrics: dict[str, float] = {}

    def check(self, row: dict) -> str | None:
        p = row.get("preference")
        if p is not None and not 0.0 <= float(p) <= 1.0:
            return f"field 'preference' is {p}, expected a probability in [0, 1]"
        return None

    def load_rows(self, spec, fields, optional, check=None) -> list[dict]:
        rows = super().load_rows(spec, fields, optional, check)
        if fields is not self.fields or all("preference" in r for r in rows):
            return rows
        if self.judge is None:
            first = next(i for i, r in enumerate(rows, start=1) if "preference" not in r)
            raise DataError(f"{as_source(spec).name}: row {first}: field 'preference' is missing (or set a judge)")
        split = next((k for k, v in self.sources.items() if v is spec), None)
        self.judge.bind(getattr(self.trainer.lightning_module, "backbone", None) if self.trainer else None)
        return self.label(rows, self.labels_file(split))

    def labels_file(self, split: str | None) -> Path | None:
        """The cache of one split: ``labels_path`` for train, ``<stem>.<split><suffix>`` beside it for the others."""
        if not self.labels_path:
            return None
        path = Path(self.labels_path)
        return path if split in (None, "train") else path.with_name(f"{path.stem}.{split}{path.suffix}")

    def label(self, rows: list[dict], path: Path | None = None) -> list[dict]:
        """Fill the missing ``preference`` labels with the judge (or from the cache ``path`` when it matches)."""
        key = [(str(r["prompt"]), r["response_a"], r["response_b"]) for r in rows]
        if path and path.is_file():
            cached = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if [(str(r["prompt"]), r["response_a"], r["response_b"]) for r in cached] == key:
                return cached
        todo = [i for i, r in enumerate(rows) if "preference" not in r]
        text = [r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"] for r in rows]
        p, self.judge_metrics = self.judge.preference(
            [text[i] for i in todo], [rows[i]["response_a"] for i in todo], [rows[i]["response_b"] for i in todo]
        )
        rows = [dict(r) for r in rows]
        for i, value in zip(todo, p.tolist()):
            rows[i]["preference"] = value
        self.judge_metrics = {"labeled": float(len(todo)), **self.judge_metrics}
        if self.trainer is not None:  # the labeler's position bias and label entropy, beside the run's other metrics
            for logger in self.trainer.loggers:
                logger.log_metrics({f"labeler/{k}": v for k, v in self.judge_metrics.items()}, step=0)
        if path and (self.trainer is None or self.trainer.is_global_zero):
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
            atomic_write_text(path.with_suffix(".metrics.json"), json.dumps(self.judge_metrics))
        return rows

    def encode(self, row: dict) -> dict[str, Any]:
        a = self.encode_pair(row["prompt"], row["response_a"])
        b = self.encode_pair(row["prompt"], row["response_b"])
        return {"a_input_ids": a["input_ids"], "b_input_ids": b["input_ids"], "preference": float(row["preference"])}
