"""Cherry / IFD (Li et al., NAACL 2024, "From Quantity to Quality", arXiv:2308.12032) and Superfiltering (Li et al.,
ACL 2024, arXiv:2402.00530): keep the rows whose instruction helps the model least to produce the answer.

For a row with instruction Q and answer A (answer tokens a_1..a_n, identical token ids in both contexts)::

    L(A | Q) = -1/n Σ_t log p(a_t | Q, a_<t)          mean NLL of the answer after the rendered prompt
    L(A)     = -1/n Σ_t log p(a_t | s, a_<t)          mean NLL of the answer alone, after a start token s
    IFD      = L(A | Q) / L(A)                        ratio="loss" (Cherry, data_by_IFD.py)
    IFD_ppl  = exp(L(A | Q)) / exp(L(A))              ratio="ppl"  (Superfiltering, code_ifd)

Rows with IFD >= 1 (the instruction does not help: a misaligned pair) and rows whose prompt + answer exceed
``max_length`` (the answer would be truncated) are dropped and counted; the top ``budget`` by IFD are kept.
Both log-likelihoods come from one batched, length-sorted pass each through ``backbone.completion_logprobs``.
Superfiltering is this class with ``scorer`` set to a small model other than the one trained (GPT-2 in the paper).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from ltune.backbone import Backbone
from ltune.datamodules.base import LTuneData
from ltune.datamodules.batching import pad_right
from ltune.datamodules.selection.base import Selection, pair_text
from ltune.datamodules.selection.scoring import SKIPPED, render_each
from ltune.forward import completion_logprobs
from ltune.kernels import IGNORE_INDEX


class IFD(Selection):
    """Instruction-Following Difficulty selection (Cherry), or Superfiltering with a small scorer.

    Args:
        pool: The candidate pool DataModule (instruction rows; preference rows are scored on prompt + chosen).
        budget: Rows to keep: an int is a count, a float in (0, 1] a fraction of the *original* pool (Cherry's
            ``sample_rate`` is relative to the filtered list; ltune's is not).
        scorer: Model that computes the losses; ``None`` scores with the trained objective's backbone at its
            initial weights (LoRA off): Cherry V2's "base model" IFD. Give a pre-experienced checkpoint folder for
            Cherry V1, or a small model such as ``gpt2`` for Superfiltering.
        ratio: ``"loss"``: ratio of mean cross-entropies (Cherry); ``"ppl"``: ratio of perplexities (Superfiltering).
        direct_prefix: Text before the answer in the answer-alone context (Cherry V1: ``"### Response:"``). ``None``
            uses the tokenizer's BOS token (EOS when it has none), so every answer token is scored in both contexts.
        max_length: Longest prompt + answer in scorer tokens (``None``: the pool's ``max_length``); longer rows are
            skipped and counted, as in Cherry.
        **kwargs: :class:`Selection`'s ``cache_dir``, ``report_dir``, ``score_batch_size``, ``score_chunk``,
            ``progress``.
    """

    def __init__(
        self,
        pool: LTuneData,
        budget: int | float = 0.1,
        scorer: Backbone | None = None,
        ratio: Literal["loss", "ppl"] = "loss",
        direct_prefix: str | None = None,
        max_length: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(pool, budget, **kwargs)
        if ratio not in ("loss", "ppl"):
            raise ValueError(f"ratio must be 'loss' or 'ppl', got {ratio!r}")
        self.scorer, self.ratio, self.direct_prefix, self.max_length_scored = scorer, ratio, direct_prefix, max_length

    def scorer_backbone(self) -> Backbone:
        return self.scoring_backbone(self.scorer)

    def scorer_config(self) -> dict[str, Any]:
        bb = self.scorer_backbone()
        return {
            **super().scorer_config(),
            "scorer": dataclasses.asdict(bb),
            "ratio": self.ratio,
            "direct_prefix": self.direct_prefix,
            "max_length": self.max_length_scored or self.pool.max_length,
        }

    def prefix_ids(self, tok) -> list[int]:
        if self.direct_prefix is not None:
            ids = tok(self.direct_prefix, add_special_tokens=False)["input_ids"]
        else:
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            ids = [] if start is None else [start]
        if not ids:
            raise ValueError("the answer-alone context needs at least one token: set `direct_prefix`")
        return ids

    def score(self, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
        bb = self.scorer_backbone()
        return self.score_with(lambda: bb.load_frozen(self.device()), bb.tokenizer, rows, names)

    def score_with(
        self,
        model: torch.nn.Module | Callable[[], torch.nn.Module],
        tokenizer: Any,
        rows: list[dict],
        names: list[str],
        device: torch.device | None = None,
    ) -> dict[str, np.ndarray]:
        """IFD of ``rows`` under a given model: ``ifd``, ``loss_cond``, ``loss_direct`` (NaN where skipped) and the
        ``skipped`` mask. Cherry's pre-experienced stage (:class:`ltune.callbacks.CherryPreExperience`) scores
        with the model it has just trained.

        Args:
            model: A causal LM in eval mode, or a callable returning one (loaded after the rows are rendered).
            tokenizer: The model's tokenizer.
            rows: The rows to score.
            names: Their labels for error messages.
            device: Where the batches go (default: the model's device).
        """
        tok = tokenizer
        fmt = self.renderer(tok, self.max_length_scored)
        prefix = self.prefix_ids(tok)
        encoded, skipped = render_each(rows, names, lambda row: fmt.encode_pair(*pair_text(row)), "IFD")
        cond = [enc for enc in encoded if enc is not None]
        direct = []
        for enc in cond:
            answer = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX]
            direct.append({"input_ids": prefix + answer, "labels": [IGNORE_INDEX] * len(prefix) + answer})
        if not isinstance(model, torch.nn.Module):
            model = model()
        device = device or next(model.parameters()).device
        pad = tok.pad_token_id

        def mean_nll(items: list[dict]) -> torch.Tensor:
            ids, mask = pad_right([e["input_ids"] for e in items], pad)
            labels = pad_right([e["labels"] for e in items], IGNORE_INDEX)[0]
            lp = completion_logprobs(model, ids.to(device), mask.to(device), labels.to(device)).logprobs
            n = (labels[:, 1:] != IGNORE_INDEX).sum(1).to(device)
            return (-lp.double().sum(1) / n).cpu()

        @torch.inference_mode()
        def fn(batch: list[int]) -> dict[str, np.ndarray]:
            lc, ld = mean_nll([cond[j] for j in batch]), mean_nll([direct[j] for j in batch])
            ifd = lc / ld if self.ratio == "loss" else torch.exp(lc - ld)
            return {"ifd": ifd.numpy(), "loss_cond": lc.numpy(), "loss_direct": ld.numpy()}

        kept = np.flatnonzero(~skipped)
        res = self.batched(
            len(kept), [len(e["input_ids"]) for e in cond], fn, [names[i] for i in kept], desc="IFD scoring"
        )
        out = {name: np.full(len(rows), np.nan) for name in ("ifd", "loss_cond", "loss_direct")}
        for name, values in res.items():
            out[name][kept] = values
        out[SKIPPED] = skipped
        return out

    def choose(self, scores: dict[str, np.ndarray], k: int) -> np.ndarray:
        ifd = scores["ifd"]
        eligible = np.flatnonzero(~scores[SKIPPED] & (ifd < 1.0))
        return eligible[np.argsort(-ifd[eligible], kind="stable")][:k]

    def cut(self, scores: dict[str, np.ndarray], selected: np.ndarray) -> tuple[str, float | None]:
        return "ifd", float(scores["ifd"][selected].min()) if len(selected) else None
