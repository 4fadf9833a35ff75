"""Evaluation by generation (a mixin of :class:`ltune.objectives.base.Objective`): greedy completions of the
evaluation prompts scored by exact match of their answer (overall and per category), optionally maj@N and pass@k over
N sampled completions, and every completion saved under the run.

Each evaluation writes ``<log dir>/completions/<stage>-step<global step>.jsonl`` on rank 0 (every rank's rows): one
line per prompt with its prompt, greedy completion, the answer read from it, the reference, whether it matched, its
category and, with ``eval_samples > 1``, the sampled completions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ltune.generation import GenerationProgress, HFSampler, decode
from ltune.metrics import ExactMatch, MajorityAtN, PassAtK
from ltune.objectives.checkpoint import per_rank
from ltune.rewards import answer_matches, final_answer

AnswerMatch = Literal["strict", "lenient"]


class GenerationEval:
    """Evaluation by generation. Set up by :meth:`init_evaluation` from the objective's arguments."""

    def init_evaluation(self, answer_match: AnswerMatch, eval_samples: int, eval_temperature: float) -> None:
        """Set up the metrics (the objective's arguments of the same names, documented there)."""
        if answer_match not in ("strict", "lenient"):
            raise ValueError(f"answer_match must be 'strict' or 'lenient', got {answer_match!r}")
        if eval_samples < 1 or (eval_samples > 1 and eval_temperature <= 0):
            raise ValueError(f"eval_samples must be >= 1 (sampled at eval_temperature > 0), got {eval_samples}")
        self.answer_match, self.eval_samples, self.eval_temperature = answer_match, eval_samples, eval_temperature
        strict = answer_match == "strict"
        self.exact_match = ExactMatch(strict=strict)
        self.category_match: dict[str, ExactMatch] = {}
        if eval_samples > 1:
            self.majority_at_n = MajorityAtN(strict=strict)
            self.pass_at_1 = PassAtK(1, strict=strict)
            self.pass_at_n = PassAtK(eval_samples, strict=strict)
        self._completions: list[dict] = []
        self._eval_batches = 0  # seeds each evaluation batch's sampling: the same samples for the same weights

    def generate_text(
        self, prompt_ids: Tensor, prompt_mask: Tensor, max_new_tokens: int | None = None, temperature: float = 0.0
    ) -> list[str]:
        """One completion of each left-padded prompt (moved to this module's device): greedy by default, within
        ``max_new_tokens`` (default: the evaluation budget). Evaluation and the rounds' callbacks generate here; with
        a progress bar on, a bar follows the batch's decode steps."""
        tok, budget = self.tokenizer, max_new_tokens or self.max_new_tokens
        trainer = self._trainer
        shown = trainer is not None and trainer.progress_bar_callback is not None and trainer.is_global_zero
        samples = HFSampler()(
            self.model,
            prompt_ids.to(self.device),
            prompt_mask.to(self.device),
            max_new_tokens=budget,
            temperature=temperature,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            streamer=GenerationProgress(len(prompt_ids), budget) if shown else None,  # progress inside the batch
        )
        return decode(tok, samples)

    def eval_step(self, batch: dict) -> None:
        """Exact match of the answer of greedy completions (``val/exact_match`` and per category); with
        ``eval_samples`` N > 1 also ``val/maj@N``, ``val/pass@1`` and ``val/pass@N`` over N sampled completions."""
        texts = self.generate_text(batch["prompt_ids"], batch["prompt_mask"])
        answers, categories = batch["answer"], batch["category"]
        self.exact_match.update(texts, answers)
        for cat in sorted(set(categories)):
            idx = [i for i, c in enumerate(categories) if c == cat]
            self._category_metric(cat).update([texts[i] for i in idx], [answers[i] for i in idx])
        samples = None
        if self.eval_samples > 1:
            n = self.eval_samples
            ids, mask = batch["prompt_ids"].repeat_interleave(n, 0), batch["prompt_mask"].repeat_interleave(n, 0)
            rank = self._trainer.global_rank if self._trainer is not None else 0
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # the run's own RNG streams (dropout, data) stay untouched
                torch.manual_seed(hash((self.global_step, rank, self._eval_batches)) % 2**31)
                flat = self.generate_text(ids, mask, temperature=self.eval_temperature)
            self._eval_batches += 1
            samples = [flat[i * n : (i + 1) * n] for i in range(len(texts))]
            for metric in (self.majority_at_n, self.pass_at_1, self.pass_at_n):
                metric.update(samples, answers)
        if self._trainer is not None and not self._trainer.sanity_checking:
            self._keep_completions(batch, texts, samples)

    def _keep_completions(self, batch: dict, texts: list[str], samples: list[list[str]] | None) -> None:
        strict = self.answer_match == "strict"
        ids, mask = batch["prompt_ids"], batch["prompt_mask"]
        prompts = [self.tokenizer.decode(row[m.bool()].tolist()) for row, m in zip(ids, mask)]
        for i, (prompt, text, reference) in enumerate(zip(prompts, texts, batch["answer"])):
            row = {"prompt": prompt, "completion": text, "answer": final_answer(text, strict), "reference": reference}
            row |= {"correct": answer_matches(text, reference, strict), "category": batch["category"][i]}
            self._completions.append(row | ({"samples": samples[i]} if samples is not None else {}))

    def _category_metric(self, category: str) -> ExactMatch:
        if category not in self.category_match:  # created lazily, outside inference mode so states stay updatable
            with torch.inference_mode(False):
                self.category_match[category] = ExactMatch(strict=self.answer_match == "strict").to(self.device)
        return self.category_match[category]

    def on_validation_epoch_start(self) -> None:
        # Lightning resets logged metrics inside ``trainer.validate``'s inference mode, but fit's validation runs
        # outside it: re-create validation metric states as normal tensors so both can update them.
        from torchmetrics import Metric

        with torch.inference_mode(False):
            for name, module in self.named_modules():
                if name.startswith("val") and isinstance(module, Metric):
                    module.reset()

    def on_validation_epoch_end(self) -> None:
        with torch.inference_mode(False):  # reset() re-creates metric states: keep them normal (updatable) tensors
            self._log_exact_match()
        self._save_completions()

    def _save_completions(self) -> None:
        rows, self._completions, self._eval_batches = self._completions, [], 0
        if self._trainer is None or self.trainer.sanity_checking:
            return
        rows = [r for rank_rows in per_rank(rows) for r in rank_rows]  # every rank calls: a rank may have no rows
        log_dir = self.trainer.log_dir or self.trainer.default_root_dir  # every rank (log_dir broadcasts)
        if not self.trainer.is_global_zero or not rows:
            return
        path = Path(log_dir, "completions", f"{self.trainer.state.fn.value}-step{self.global_step}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def _log_exact_match(self) -> None:
        # compute() gathers across ranks: decide on every rank alike (a rank may have had no evaluation rows)
        used = any(per_rank(bool(self.exact_match.update_count)))
        if used:
            self.log("val/exact_match", self.exact_match.compute(), sync_dist=False)
            self.exact_match.reset()
        if self.eval_samples > 1 and used:
            n = self.eval_samples
            for name, metric in (
                (f"maj@{n}", self.majority_at_n),
                ("pass@1", self.pass_at_1),
                (f"pass@{n}", self.pass_at_n),
            ):
                self.log(f"val/{name}", metric.compute(), sync_dist=False)
                metric.reset()
        cats = set(self.category_match)
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # same metrics on every rank
            cats = set().union(*per_rank(cats))
        if cats == {"all"}:  # no row names a category ("all" is the data's default): val/exact_match says it all
            cats = set()
            if "all" in self.category_match:  # a rank without evaluation rows has none
                self.category_match["all"].reset()
        for cat in sorted(cats):
            metric = self._category_metric(cat)
            self.log(f"val/exact_match/{cat}", metric.compute())
            metric.reset()
