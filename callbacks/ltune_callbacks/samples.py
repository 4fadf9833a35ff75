"""Log completions as a table every N training steps: a W&B table (``WandbLogger.log_table``) on every logger that
has one, and ``<log_dir>/samples.jsonl`` whatever the logger. The rows are the step's own rollouts with their reward
and advantage (GRPO and its variants, as TRL's ``log_completions``), or greedy completions of evaluation prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import lightning as L
import torch

from ltune.rewards import answer_matches

COLUMNS = ["step", "prompt", "completion", "answer", "correct"]
ROLLOUT_COLUMNS = ["step", "prompt", "completion", "reward", "advantage"]


class SampleTable(L.Callback):
    """Every ``every_n_steps`` optimizer steps, log a table of completions.

    ``source="rollouts"``: the completions the step trained on (an objective's ``last_rollouts``: GRPO, TTRL,
    RLAIF), the first ``num_prompts`` prompts' groups, with reward and advantage. ``source="eval"``: greedy
    completions of the first ``num_prompts`` evaluation prompts of the DataModule, with the reference answer and
    whether the final answer matches it (None without a reference). ``"auto"``: rollouts when the objective keeps them.

    Args:
        every_n_steps: Interval in optimizer steps (the first table is logged at this step).
        num_prompts: Prompts per table.
        max_new_tokens: Token budget of each completion.
        temperature: Sampling temperature; 0 is greedy.
        key: Name of the W&B table.
        source: ``"auto"``, ``"rollouts"`` or ``"eval"`` (above).
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        num_prompts: int = 8,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        key: str = "samples",
        source: Literal["auto", "rollouts", "eval"] = "auto",
    ) -> None:
        if every_n_steps < 1 or num_prompts < 1:
            raise ValueError(f"every_n_steps and num_prompts must be >= 1, got {every_n_steps}, {num_prompts}")
        self.every_n_steps, self.num_prompts = every_n_steps, num_prompts
        self.max_new_tokens, self.temperature, self.key, self.source = max_new_tokens, temperature, key, source
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if step == 0 or step == self._last_step or step % self.every_n_steps:
            return
        self._last_step = step
        rollouts = self.source != "eval" and getattr(pl_module, "last_rollouts", None) is not None
        if self.source == "rollouts" and not rollouts:
            raise ValueError(f"SampleTable(source='rollouts'): {type(pl_module).__name__} keeps no rollouts")
        if rollouts:
            rows, columns = self.rollouts(pl_module), ROLLOUT_COLUMNS
        else:
            rows, columns = self.sample(trainer, pl_module), COLUMNS
        path = Path(trainer.log_dir or trainer.default_root_dir) / "samples.jsonl"  # every rank: log_dir broadcasts
        if not trainer.is_global_zero or not rows:
            return
        data = [[step, *(r[c] for c in columns[1:])] for r in rows]
        for logger in trainer.loggers:
            if hasattr(logger, "log_table"):
                logger.log_table(key=self.key, columns=columns, data=data, step=step)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            for row in data:
                f.write(json.dumps(dict(zip(columns, row))) + "\n")

    def rollouts(self, pl_module: L.LightningModule) -> list[dict]:
        """The latest step's completions of its first ``num_prompts`` prompts, with reward and advantage."""
        r = pl_module.last_rollouts
        n = min(len(r["completions"]), self.num_prompts * getattr(pl_module, "num_generations", 1))
        ids, mask = r["samples"].prompt_ids[:n], r["samples"].prompt_mask[:n]
        prompts = pl_module.tokenizer.batch_decode([i[m.bool()] for i, m in zip(ids, mask)], skip_special_tokens=True)
        values = zip(prompts, r["completions"], r["rewards"].tolist(), r["advantages"].tolist())
        return [{"prompt": p, "completion": c, "reward": w, "advantage": a} for p, c, w, a in values]

    @torch.no_grad()
    def sample(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[dict]:
        examples = trainer.datamodule.data.get("eval", [])[: self.num_prompts]
        if not examples:
            return []
        batch = trainer.datamodule.collate(examples)
        texts = pl_module.generate_text(
            batch["prompt_ids"], batch["prompt_mask"], self.max_new_tokens, self.temperature
        )
        prompts = pl_module.tokenizer.batch_decode(batch["prompt_ids"], skip_special_tokens=True)
        out = []
        for prompt, text, answer in zip(prompts, texts, batch["answer"]):
            strict = getattr(pl_module, "answer_match", "strict") == "strict"  # as the objective's evaluation reads
            correct = None if answer is None else answer_matches(text, answer, strict)
            out.append({"prompt": prompt, "completion": text, "answer": answer, "correct": correct})
        return out
