"""ReST-EM (Singh et al., 2023, "Beyond Human Data: Scaling Self-Training for Problem-Solving with Language Models",
arXiv:2312.06585): expectation-maximisation with a binary verifier reward.

* E-step: sample ``K`` completions per training problem from the current model, keep those whose final answer the
  verifier accepts (:func:`ltune.rewards.verifier_reward`), at most ``max_solutions`` per problem, chosen at random.
* M-step: SFT **from the base model** on that round's kept solutions only (not cumulative), i.e. the reward-weighted
  NLL with r in {0, 1}. Repeat for ``rounds`` rounds; round 0 trains on samples of the initial model.
* With ``keep_rejected`` the E-step also keeps samples the verifier rejects (at most ``max_solutions`` per problem),
  and a round's rows become unpaired preference rows (``prompt``, ``completion``, ``label``: verified or not) that
  :class:`ltune.KTO` trains on with :class:`ltune.datamodules.UnpairedPreferenceData`: ReST-EM's samples as KTO's
  thumbs-up/thumbs-down feedback (``configs/loops/rest_em_kto.yaml``).
* Keep the best round (``keep_best``): the model ends with the weights of the round whose held-out metric
  (``val/exact_match``) was best, restored before ``on_train_end`` so ``HFExport`` writes them; optionally stop at
  the first round whose held-out metric falls below the best (``early_stop_on_regression``).

ltune fit --config configs/loops/rest_em.yaml
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from ltune.callbacks.best_round import BestRound
from ltune.callbacks.rounds import Rounds
from ltune.datamodules import SourceLike, as_source
from ltune.generation import HFSampler, decode, sample_groups, terminated
from ltune.rewards import verifier_reward


class ReSTEM(Rounds):
    """ReST-EM rounds: sample, filter by a binary reward, cap per problem, retrain from the base model.

    Use with :class:`ltune.SFT` and :class:`ltune.datamodules.InstructionData` (the kept solutions become
    ``prompt``/``response`` rows), or with ``keep_rejected`` with :class:`ltune.KTO` and
    :class:`ltune.datamodules.UnpairedPreferenceData` (``prompt``/``completion``/``label`` rows). Logs per round
    ``round/pass_rate`` (correct samples / samples), ``round/solved`` (problems with at least one correct sample),
    ``round/kept`` (training rows), ``round/kept_rejected`` (of them, rejected samples; with ``keep_rejected``) and
    ``round/held_out/exact_match`` (the objective's ``val/exact_match`` after the round's M-step) and, with
    ``keep_best``, ``round/best_round`` (the best round so far; ``rounds.json`` keeps it per round, and the last
    entry's is the round whose weights the model ends with).

    Args:
        problems: Training problems with reference answers (``prompt``, ``answer``, optional ``category``): a path,
            a Hub dataset id or a ``Source`` such as ``EmbeddedTasks(format="prompts")``.
        rounds: Number of M-steps (paper: 3 on MATH; APPS peaked after 1).
        num_samples: Completions sampled per problem in each E-step (paper: 32 on MATH, 64 on APPS).
        max_solutions: Most correct solutions kept per problem (paper: 10); with ``keep_rejected`` also the most
            rejected samples kept per problem.
        keep_rejected: Keep rejected samples too (chosen at random among a problem's samples the verifier rejects,
            or that ``max_new_tokens`` cut, non-empty), as ``label: false`` rows beside the verified ``label: true``
            ones, for KTO; needs a DataModule that reads a ``label`` field.
        temperature: Sampling temperature (the paper's 0.7 is recalled, unverified).
        top_p: Nucleus sampling threshold.
        top_k: Sample among the ``top_k`` most likely tokens (paper: 40); None = no top-k filter.
        max_new_tokens: Token budget of each completion; completions cut by it never count as correct.
        generation_batch_size: Completions generated at once (a multiple of ``num_samples``; None = a whole chunk).
        epochs_per_round: Epochs of SFT per M-step.
        reset_to_base: Retrain from the base weights every round (ReST-EM's choice; False continues training).
        chunk_size: Problems per E-step chunk (unit of resume and sharding).
        seed: Seed of sampling and of the choice among correct solutions; None: the run's seed (``seed_everything``).
        output_dir: Folder of the produced data (relative: under the run's log folder).
        keep_best: End with the weights of the round with the best held-out ``monitor`` (written to
            ``round_<r>/model.pt`` when a round improves; ties keep the earlier round). Needs validation after each
            round's M-step (``eval_prompts`` for ``val/exact_match``); without the metric it keeps the last round.
        monitor: The held-out metric of ``keep_best`` and ``early_stop_on_regression``.
        mode: ``"max"`` when a higher ``monitor`` is better, ``"min"`` otherwise.
        early_stop_on_regression: Stop (no further E-step or M-step) after the first round whose held-out ``monitor``
            is worse than the best round's.
    """

    def __init__(
        self,
        problems: SourceLike,
        rounds: int = 3,
        num_samples: int = 32,
        max_solutions: int = 10,
        keep_rejected: bool = False,
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int | None = 40,
        max_new_tokens: int = 64,
        generation_batch_size: int | None = None,
        epochs_per_round: int = 1,
        reset_to_base: bool = True,
        chunk_size: int = 64,
        seed: int | None = None,
        output_dir: str = "rounds",
        keep_best: bool = True,
        monitor: str = "val/exact_match",
        mode: str = "max",
        early_stop_on_regression: bool = False,
    ) -> None:
        super().__init__(rounds, epochs_per_round, reset_to_base, True, chunk_size, seed, output_dir)
        if num_samples < 1 or max_solutions < 1:
            raise ValueError(f"num_samples and max_solutions must be >= 1, got {num_samples}, {max_solutions}")
        self.problems = problems
        self.num_samples, self.max_solutions, self.keep_rejected = num_samples, max_solutions, keep_rejected
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.top_k, self.generation_batch_size = top_k, generation_batch_size
        self.keep_best, self.early_stop_on_regression = keep_best, early_stop_on_regression
        self.best = BestRound(monitor, mode)
        self._items: list[dict] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        fields = getattr(trainer.datamodule, "fields", {})
        if self.keep_rejected and "label" not in fields:
            raise ValueError(
                f"ReSTEM(keep_rejected=True) makes prompt/completion/label rows, which "
                f"{type(trainer.datamodule).__name__} does not read: use ltune.datamodules.UnpairedPreferenceData "
                "with ltune.KTO (configs/loops/rest_em_kto.yaml)"
            )
        if not self.keep_rejected and "label" in fields:
            raise ValueError(
                f"ReSTEM makes prompt/response rows of verified solutions only, but {type(trainer.datamodule).__name__}"
                " reads labelled rows: set keep_rejected: true to keep the rejected samples as label-false rows"
            )
        super().setup(trainer, pl_module, stage)

    def e_step_items(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int) -> list[dict]:
        if self._items is None:
            source = as_source(self.problems)
            self._items = []
            for i, row in enumerate(source.load(), start=1):
                if not isinstance(row.get("prompt"), str) or not isinstance(row.get("answer"), str):
                    raise ValueError(f"{source.name}: row {i}: ReST-EM problems need string 'prompt' and 'answer'")
                self._items.append(
                    {"prompt": row["prompt"], "answer": row["answer"], "category": row.get("category") or "all"}
                )
        return self._items

    @torch.no_grad()
    def e_step(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, items: list[dict]) -> list[dict]:
        data, tok, k = trainer.datamodule, pl_module.tokenizer, self.num_samples
        ids, mask = data.prompt_batch([it["prompt"] for it in items])
        samples = sample_groups(
            HFSampler(),
            pl_module.model,
            ids.to(pl_module.device),
            mask.to(pl_module.device),
            num_samples=k,
            generation_batch_size=self.generation_batch_size,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        texts = [t.strip() for t in decode(tok, samples)]
        rewards = verifier_reward(texts, [it["answer"] for it in items for _ in range(k)])
        done = terminated(samples, tok.eos_token_id).tolist()
        out = []
        for i, it in enumerate(items):
            group = range(i * k, (i + 1) * k)
            verified = [rewards[j] == 1.0 and done[j] for j in group]
            correct = [texts[j] for j, ok in zip(group, verified) if ok and texts[j]]
            kept = random.sample(correct, min(self.max_solutions, len(correct)))  # seeded per chunk by Rounds
            produced = {**it, "samples": k, "correct": len(correct), "solutions": kept}
            if self.keep_rejected:
                wrong = [texts[j] for j, ok in zip(group, verified) if not ok and texts[j]]
                produced["rejected"] = random.sample(wrong, min(self.max_solutions, len(wrong)))
            out.append(produced)
        return out

    def train_rows(
        self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, produced: list[dict]
    ) -> list[dict]:
        if not self.keep_rejected:
            return [
                {"prompt": p["prompt"], "response": s, "answer": p["answer"], "category": p["category"]}
                for p in produced
                for s in p["solutions"]
            ]
        return [
            {"prompt": p["prompt"], "completion": s, "label": label, "category": p["category"]}
            for p in produced
            for label, key in ((True, "solutions"), (False, "rejected"))
            for s in p[key]
        ]

    def round_metrics(self, round: int, produced: list[dict], rows: list[dict]) -> dict[str, float]:
        samples = sum(p["samples"] for p in produced)
        return {
            "pass_rate": sum(p["correct"] for p in produced) / max(samples, 1),
            "solved": sum(p["correct"] > 0 for p in produced) / max(len(produced), 1),
            "kept": float(len(rows)),
            **({"kept_rejected": float(sum(not r["label"] for r in rows))} if self.keep_rejected else {}),
        }

    # ---- keep the best round --------------------------------------------------------------------------------------
    def end_of_round(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int) -> bool:
        if not (self.keep_best or self.early_stop_on_regression):
            return False
        value = self.best.value_of(trainer)
        if value is None:
            rank_zero_warn(
                f"ReSTEM: no {self.best.monitor!r} after the M-step of round {round}: add eval_prompts "
                "(or validation) to keep the best round; the round counts as no improvement"
            )
        regressed = value is not None and self.best.worse(value)
        if value is not None:
            self.best.update(trainer, pl_module, round, value, self.dir, save=self.keep_best)
        stop = self.early_stop_on_regression and regressed
        metrics = {"best_round": self.best.round} if self.best.round is not None else {}
        self._record(trainer, round, {**metrics, **({"early_stop": 1.0} if stop else {})})
        if self.keep_best and (stop or round + 1 >= self.rounds):
            self.best.restore(trainer, pl_module, round)  # before on_train_end: HFExport writes the best round
        return stop

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best": self.best.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best.load_state_dict(state.get("best", {}))
