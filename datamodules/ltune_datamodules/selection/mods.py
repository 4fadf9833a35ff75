"""MoDS (Du, Zong, Zhang, 2023, "MoDS: Model-oriented Data Selection for Instruction Tuning", arXiv:2311.15653).

1. Quality: a reward model scores (instruction, response); rows with reward > α (0.0) form the high-quality set.
2. Coverage: k-center greedy (Euclidean, seeded first centre) over the instruction embeddings of the high-quality
   set picks the seed set (``budget`` rows).
3. Necessity (:class:`ltune.callbacks.MoDSNecessity`, a round of the self-training callbacks): after training
   on the seed set, the model answers every other high-quality instruction; answers with reward < β mark rows the model
   handles badly; those are k-center-reduced to ``augment_size`` (extending the seed centres) and added to the seed
   set (deduplicated), and the base model is trained again on the union.

Rewards come from any sequence scorer: an object with ``score(prompts, responses) -> Tensor``, e.g.
:class:`HFRewardModel` (MoDS: ``OpenAssistant/reward-model-deberta-v3-large-v2``, score = ``logits[0]``) or
``ltune.judges.LMJudge`` (a local LM's expected 1-10 rating). Inputs are truncated explicitly; nothing is skipped.
Under DDP each rank scores and embeds its shard of the pool; the scores are gathered and the threshold and k-center
greedy run on the whole pool on every rank (global: the rows one process keeps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ltune.backbone import Backbone
from ltune.datamodules.base import LTuneData
from ltune.datamodules.selection.base import Selection, instruction_text, pair_text
from ltune.datamodules.selection.geometry import k_center_greedy


@runtime_checkable
class SequenceScorer(Protocol):
    """Anything that scores responses to prompts: ``[N]`` float tensor, higher is better."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor: ...


class HFRewardModel:
    """A Hugging Face sequence-classification reward model; score = ``logits[:, 0]`` of the (question, answer) pair.

    Args:
        name_or_path: Hub id or folder (MoDS: ``OpenAssistant/reward-model-deberta-v3-large-v2``).
        max_length: Pairs are truncated to this many tokens (the answer first), never skipped.
        batch_size: Pairs per forward.
        revision: Git revision of a Hub model.
    """

    def __init__(self, name_or_path: str, max_length: int = 512, batch_size: int = 16, revision: str | None = None):
        self.name_or_path, self.max_length, self.batch_size, self.revision = (
            name_or_path,
            max_length,
            batch_size,
            revision,
        )
        self._model = self._tok = None

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self._model is None:
            self._tok = AutoTokenizer.from_pretrained(self.name_or_path, revision=self.revision)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                self.name_or_path,
                revision=self.revision,
                use_kernels=False,  # as ltune.backbone.Backbone
            )
            self._model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
        out = []
        for s in range(0, len(prompts), self.batch_size):
            p, r = list(prompts[s : s + self.batch_size]), list(responses[s : s + self.batch_size])
            enc = self._tok(
                p, r, truncation="longest_first", max_length=self.max_length, padding=True, return_tensors="pt"
            )
            out.append(self._model(**enc.to(self._model.device)).logits[:, 0].float().cpu())
        return torch.cat(out)


def scorer_config(obj: Any) -> dict[str, Any]:
    """The plain settings of a scorer object (for the cache key): JSON-able attributes and dataclasses."""
    out: dict[str, Any] = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    for k, v in vars(obj).items():
        if k.startswith("_"):
            continue
        if dataclasses.is_dataclass(v):
            out[k] = dataclasses.asdict(v)
        elif isinstance(v, (str, int, float, bool, type(None), list, tuple, dict)):
            out[k] = v
    return out


class MoDS(Selection):
    """MoDS: reward threshold α, then k-center greedy over instruction embeddings to the seed budget.

    Args:
        pool: The candidate pool DataModule.
        reward: A sequence scorer (``score(prompts, responses)``), e.g. :class:`HFRewardModel` or ``LMJudge``.
        budget: Size of the seed set: an int is a count, a float in (0, 1] a fraction of the original pool.
        alpha: Quality threshold: rows with reward > alpha are high quality (MoDS README: 0.0).
        beta: Necessity threshold: generated answers with reward < beta mark rows to add (no default in MoDS).
        augment_size: Rows added by the necessity stage at most (k-center over the necessary rows); ``None``: all.
        embedder: ``None``: MiniLM (offline package) of the instruction; a backbone: its last-token hidden state
            (MoDS used BERT's [CLS] of the instruction).
        seed: Seed of the first k-center.
        **kwargs: :class:`Selection`'s ``cache_dir``, ``report_dir``, ``score_batch_size``, ``score_chunk``,
            ``progress``.
    """

    def __init__(
        self,
        pool: LTuneData,
        reward: SequenceScorer,
        budget: int | float = 1000,
        alpha: float = 0.0,
        beta: float = 0.0,
        augment_size: int | None = None,
        embedder: Backbone | None = None,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(pool, budget, **kwargs)
        self.reward, self.alpha, self.beta, self.augment_size = reward, alpha, beta, augment_size
        self.embedder, self.kcenter_seed = embedder, seed

    def scorer_config(self) -> dict[str, Any]:
        if hasattr(self.reward, "bind"):
            self.reward.bind(self.backbone)  # an LMJudge given no backbone judges with the trained policy's
        emb = "minilm" if self.embedder is None else dataclasses.asdict(self.embedder)
        return {**super().scorer_config(), "reward": scorer_config(self.reward), "embedder": emb}

    def reward_of(self, prompts: list[str], responses: list[str], names: list[str], desc: str) -> np.ndarray:
        """Rewards in batches (a failing row is named)."""

        def fn(batch):
            return {"r": self.reward.score([prompts[j] for j in batch], [responses[j] for j in batch]).double().numpy()}

        return self.batched(len(prompts), [len(p) + len(r) for p, r in zip(prompts, responses)], fn, names, desc)["r"]

    def score(self, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
        prompts = [instruction_text(r) for r in rows]
        responses = [pair_text(r)[1] for r in rows]
        out = {"reward": self.reward_of(prompts, responses, names, "MoDS reward")}
        out["embedding"] = self.embed_texts(prompts, names, self.embedder, "MoDS instruction embeddings")
        return out

    def high_quality(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        return np.flatnonzero(scores["reward"] > self.alpha)

    def choose(self, scores: dict[str, np.ndarray], k: int) -> np.ndarray:
        hq = self.high_quality(scores)
        x = torch.from_numpy(scores["embedding"][hq]).to(self.device())
        return hq[k_center_greedy(x, k, seed=self.kcenter_seed).numpy()]

    def cut(self, scores: dict[str, np.ndarray], selected: np.ndarray) -> tuple[str, float | None]:
        return "reward", self.alpha

    # ---- the necessity stage (driven by ltune.callbacks.MoDSNecessity) ------------------------------------
    def necessity_candidates(self) -> list[int]:
        """High-quality rows outside the seed set: the model answers these after training on the seed set."""
        seed = set(self.selected)
        return [int(i) for i in self.high_quality(self.scores) if i not in seed]

    def answer_prompts(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Left-padded prompt ids and mask of pool rows ``indices``, for the trained model to answer."""
        return self.pool.prompt_batch([pair_text(self.rows[i])[0] for i in indices])

    def answer_rewards(self, indices: Sequence[int], answers: Sequence[str]) -> np.ndarray:
        """The reward of the model's ``answers`` to pool rows ``indices`` (a failing row is named)."""
        prompts = [instruction_text(self.rows[i]) for i in indices]
        return self.reward_of(prompts, list(answers), [self.row_name(i) for i in indices], "MoDS necessity reward")

    def with_necessary(self, indices: Sequence[int], rewards: Sequence[float]) -> list[dict]:
        """Seed rows + the rows whose generated answer scored < beta, k-center-reduced to ``augment_size`` (centres
        extend the seed set's), deduplicated; the training rows of the necessity round."""
        necessary = np.array([i for i, r in zip(indices, rewards) if r < self.beta], dtype=np.int64)
        if self.augment_size is not None and len(necessary) > self.augment_size:
            both = np.concatenate([np.asarray(self.selected, dtype=np.int64), necessary])
            x = torch.from_numpy(self.scores["embedding"][both]).to(self.device())
            seed_pos = torch.arange(len(self.selected))
            necessary = both[k_center_greedy(x, self.augment_size, centers=seed_pos).numpy()]
        keep = list(dict.fromkeys([*self.selected, *necessary.tolist()]))
        self.necessary = [i for i in keep if i not in set(self.selected)]
        return [self.rows[i] for i in keep]
