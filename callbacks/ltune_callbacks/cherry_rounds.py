"""Cherry's pre-experienced stage as rounds of :class:`~ltune.callbacks.rounds.Rounds` (Li et al., NAACL 2024,
"From Quantity to Quality", arXiv:2308.12032): the two Cherry commands in one ``fit``.

Round 0 trains briefly (Cherry: 1 epoch) on the pre-experience rows that :class:`ltune.datamodules.IFDPreExperience`
picked (k-means over the base model's instruction embeddings, middle-perplexity rows per cluster). The E-step then
scores every pool row by IFD with the model just trained (the pre-experienced model, through
:meth:`ltune.datamodules.IFD.score_with`), drops IFD >= 1 and over-long rows, and keeps the top ``budget``; round 1
retrains the base model (``reset_to_base``) on them: the "cherry" model. The IFD report (``selection.csv`` and
``selection.png``) of the E-step lands in ``<run>/rounds/round_1/selection/``.

    ltune fit --config configs/selection/cherry.yaml
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import numpy as np

from ltune.callbacks.rounds import Rounds
from ltune.datamodules import IFD, SKIPPED, ScoringError, Selection, pair_text, resolve_budget

_LOSSES = ("ifd", "loss_cond", "loss_direct")


class CherryPreExperience(Rounds):
    """Pre-experience M-step, IFD E-step with the pre-experienced model, then the base model on the top-IFD rows.

    Every round trains ``epochs_per_round`` epochs (Cherry: 1 epoch of pre-experience; its final model trains 3).

    Args:
        budget: Rows kept for the final round: an int is a count, a float in (0, 1] a fraction of the *original*
            pool (Cherry: 5%-15% of Alpaca).
        ratio: ``"loss"``: ratio of mean cross-entropies (Cherry); ``"ppl"``: ratio of perplexities (Superfiltering).
        direct_prefix: Text before the answer in the answer-alone context (Cherry V1: ``"### Response:"``); ``None``
            uses the tokenizer's BOS token (EOS when it has none).
        max_length: Longest prompt + answer in tokens (``None``: the pool's ``max_length``); longer rows are skipped.
        epochs_per_round: Epochs of each M-step (Cherry's pre-experience: 1).
        score_batch_size: Rows per IFD scoring forward.
        chunk_size: E-step rows per chunk (the unit of resume and of sharding over ranks).
        seed: Seed of the E-step chunks (IFD scoring draws no random numbers); None: the run's seed.
        output_dir: Folder of the produced data; relative paths go under the run's log folder.
    """

    def __init__(
        self,
        budget: int | float = 0.1,
        ratio: Literal["loss", "ppl"] = "loss",
        direct_prefix: str | None = None,
        max_length: int | None = None,
        epochs_per_round: int = 1,
        score_batch_size: int = 16,
        chunk_size: int = 256,
        seed: int | None = None,
        output_dir: str = "rounds",
    ) -> None:
        if ratio not in ("loss", "ppl"):
            raise ValueError(f"ratio must be 'loss' or 'ppl', got {ratio!r}")
        resolve_budget(budget, 1)  # fail on a malformed budget now, not after the first round
        super().__init__(
            rounds=2,
            epochs_per_round=epochs_per_round,
            reset_to_base=True,
            start_with_e_step=False,
            chunk_size=chunk_size,
            seed=seed,
            output_dir=output_dir,
        )
        self.budget, self.ratio, self.direct_prefix, self.max_length = budget, ratio, direct_prefix, max_length
        self.score_batch_size = score_batch_size
        self.selected: list[int] | None = None
        self._ifd: Selection | None = None
        self._figures: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not isinstance(trainer.datamodule, Selection):
            raise TypeError(
                "CherryPreExperience trains round 0 on a selection DataModule's rows and scores its pool: "
                "use ltune.datamodules.IFDPreExperience (or another Selection) as `data`"
            )
        super().setup(trainer, pl_module, stage)

    def ifd(self, trainer: L.Trainer) -> Selection:
        """The IFD selector over the DataModule's pool (its prompt format, scoring and ``choose``)."""
        if self._ifd is None:
            settings = dict(
                budget=self.budget,
                ratio=self.ratio,
                direct_prefix=self.direct_prefix,
                max_length=self.max_length,
                score_batch_size=self.score_batch_size,
            )
            self._ifd = IFD(trainer.datamodule.pool, progress=False, **settings)  # the DataModule's pool, IFD's rules
        return self._ifd

    def e_step_items(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int) -> list[dict]:
        return [{"index": i} for i in range(len(trainer.datamodule.rows))]

    def e_step(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, items: list[dict]) -> list[dict]:
        dm, idx = trainer.datamodule, [it["index"] for it in items]
        model, training = pl_module.model, pl_module.model.training
        model.eval()
        try:
            s = self.ifd(trainer).score_with(
                model,
                pl_module.tokenizer,
                [dm.rows[i] for i in idx],
                [dm.row_name(i) for i in idx],
                device=pl_module.device,
            )
        finally:
            model.train(training)
        out = []
        for j, i in enumerate(idx):
            if s[SKIPPED][j]:
                out.append({"index": i, "skipped": True, **dict.fromkeys(_LOSSES)})
                continue
            if not np.isfinite(s["ifd"][j]):
                raise ScoringError(f"{dm.row_name(i)}: IFD is {s['ifd'][j]} (not finite); nothing defaulted")
            out.append({"index": i, "skipped": False, **{k: float(s[k][j]) for k in _LOSSES}})
        return out

    def train_rows(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, produced: list[dict]):
        dm = trainer.datamodule
        n = len(dm.rows)
        scores = {k: np.full(n, np.nan) for k in _LOSSES}
        scores[SKIPPED] = np.zeros(n, dtype=bool)
        for p in produced:
            scores[SKIPPED][p["index"]] = p["skipped"]
            for k in _LOSSES:
                scores[k][p["index"]] = np.nan if p[k] is None else p[k]
        selected = self.ifd(trainer).keep(scores, n, report_dir=self.dir / f"round_{round}" / "selection")
        self.selected = selected.tolist()
        ok = ~scores[SKIPPED]
        chars = np.array([len(pair_text(r)[1]) for r in dm.rows], dtype=float)  # IFD's length bias, as the spec asks
        self._figures = {
            "scored": float(ok.sum()),
            "skipped": float((~ok).sum()),
            "ifd_below_1": float((scores["ifd"][ok] < 1.0).sum()),
            "mean_ifd": float(scores["ifd"][ok].mean()) if ok.any() else float("nan"),
            "mean_ifd_kept": float(scores["ifd"][selected].mean()) if len(selected) else float("nan"),
            "mean_response_chars": float(chars.mean()),
            "mean_response_chars_kept": float(chars[selected].mean()) if len(selected) else float("nan"),
        }
        return [dm.rows[i] for i in self.selected]

    def round_metrics(self, round: int, produced: list[dict], rows: list[dict]) -> dict[str, float]:
        return {"rows": float(len(rows)), **self._figures}
