"""Cherry's pre-experience stage (Li et al., NAACL 2024, arXiv:2308.12032, ``data_by_cluster.py``): a small,
diverse, middle-difficulty subset on which the base model is trained briefly (1 epoch) before it scores IFD.

Per row, with the base model: the perplexity of the rendered instruction and its sentence embedding (the mean over
its tokens of the final hidden states). K-means (100 clusters, seed 0) over the embeddings; in each cluster, the rows
whose perplexity lies in the [25th, 75th] percentile band, and of those ``per_cluster`` = 10 evenly spaced in pool
order (stride ``len(band) // 10``). A cluster with fewer than 10 rows is taken whole, a band with fewer than 10 rows
likewise. About 1,000 rows for 100 clusters.

One command runs the whole of Cherry as rounds (:class:`ltune.callbacks.CherryPreExperience`: round 0 trains
on these rows, its E-step scores the pool by IFD with the pre-experienced model, round 1 trains the base model on the
kept rows); the two-command path exports the pre-experienced model and scores with it:

    ltune fit --config configs/selection/cherry.yaml                 # one command
    ltune fit --config configs/selection/cherry_pre.yaml             # select, train 1 epoch, export runs/.../hf
    ltune fit --config configs/selection/ifd.yaml --data.init_args.scorer.name_or_path runs/cherry_pre/version_0/hf
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ltune.backbone import Backbone
from ltune.datamodules.base import LTuneData
from ltune.datamodules.batching import pad_right
from ltune.datamodules.selection.base import Selection, pair_text
from ltune.datamodules.selection.geometry import kmeans
from ltune.datamodules.selection.scoring import ScoringError, render_each
from ltune.forward import completion_logprobs, hidden_states
from ltune.kernels import IGNORE_INDEX


class IFDPreExperience(Selection):
    """Cherry's pre-experience subset: k-means over instruction embeddings, middle-perplexity rows per cluster.

    Args:
        pool: The candidate pool DataModule.
        budget: Upper bound on the rows kept (int count or fraction); the clusters decide the size (default all).
        scorer: Model that embeds and scores the instructions; ``None``: the trained backbone at its initial weights.
        clusters: Number of k-means clusters (100 in Cherry).
        per_cluster: Rows taken per cluster (10 in Cherry).
        low_percentile: Lower edge of the perplexity band within a cluster (25).
        high_percentile: Upper edge of the perplexity band (75).
        seed: ``random_state`` of the k-means (scikit-learn, one k-means++ start; Cherry: ``random_state=0``).
        **kwargs: :class:`Selection`'s ``cache_dir``, ``report_dir``, ``score_batch_size``, ``score_chunk``,
            ``progress``.
    """

    budget_is_cap = True

    def __init__(
        self,
        pool: LTuneData,
        budget: int | float = 1.0,
        scorer: Backbone | None = None,
        clusters: int = 100,
        per_cluster: int = 10,
        low_percentile: float = 25.0,
        high_percentile: float = 75.0,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(pool, budget, **kwargs)
        self.scorer, self.clusters, self.per_cluster = scorer, clusters, per_cluster
        self.band, self.kmeans_seed = (low_percentile, high_percentile), seed

    def scorer_backbone(self) -> Backbone:
        return self.scoring_backbone(self.scorer)

    def scorer_config(self) -> dict[str, Any]:
        mx = self.pool.max_length
        return {**super().scorer_config(), "scorer": dataclasses.asdict(self.scorer_backbone()), "max_length": mx}

    def score(self, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
        bb = self.scorer_backbone()
        tok, device = bb.tokenizer, self.device()
        fmt = self.renderer(tok)
        ids, _ = render_each(rows, names, lambda row: fmt.encode_prompt(pair_text(row)[0]), "pre-experience")
        for i, x in enumerate(ids):
            if len(x) < 2:
                raise ScoringError(f"{names[i]}: the rendered instruction has fewer than 2 tokens; no perplexity")
        model = bb.load_frozen(device)

        @torch.inference_mode()
        def fn(batch: list[int]) -> dict[str, np.ndarray]:
            x, mask = pad_right([ids[j] for j in batch], tok.pad_token_id)
            x, mask = x.to(device), mask.to(device)
            labels = x.masked_fill(mask == 0, IGNORE_INDEX)
            lp = completion_logprobs(model, x, mask, labels).logprobs.double()
            nll = -lp.sum(1) / (mask[:, 1:].sum(1))
            h = hidden_states(model, x, mask).float()
            emb = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            return {"ppl": nll.exp().cpu().numpy(), "embedding": emb.cpu().numpy()}

        return self.batched(len(rows), [len(x) for x in ids], fn, names, desc="pre-experience scoring")

    def choose(self, scores: dict[str, np.ndarray], k: int) -> np.ndarray:
        labels, _ = kmeans(torch.from_numpy(scores["embedding"]), self.clusters, seed=self.kmeans_seed)
        return band_per_cluster(labels.numpy(), scores["ppl"], self.per_cluster, *self.band)[:k]

    def cut(self, scores: dict[str, np.ndarray], selected: np.ndarray) -> tuple[str, float | None]:
        return "ppl", None


def band_per_cluster(labels: np.ndarray, ppl: np.ndarray, n: int, low: float = 25.0, high: float = 75.0) -> np.ndarray:
    """Cherry's ``sample_middle_confidence_data``: per cluster (in label order), the rows with perplexity inside the
    [low, high] percentile band, ``n`` of them evenly spaced (stride ``len // n``); small clusters/bands whole."""
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < n:
            out.append(members)
            continue
        lo, hi = np.percentile(ppl[members], low), np.percentile(ppl[members], high)
        band = members[(ppl[members] >= lo) & (ppl[members] <= hi)]
        out.append(band if len(band) < n else band[:: len(band) // n][:n])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
