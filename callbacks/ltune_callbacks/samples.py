"""Log sampled generations as a table every N training steps: a W&B table (``WandbLogger.log_table``) on every
logger that has one, and ``<log_dir>/samples.jsonl`` whatever the logger."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from ltune.rewards import extract_answer, is_equivalent

COLUMNS = ["step", "prompt", "completion", "answer", "correct"]


class SampleTable(L.Callback):
    """Every ``every_n_steps`` optimizer steps, complete the first ``num_prompts`` evaluation prompts of the
    DataModule (its ``eval_prompts``) and log prompt, completion, reference answer and whether the final answer
    matches it (None without a reference).

    Args:
        every_n_steps: Interval in optimizer steps (the first table is logged at this step).
        num_prompts: Prompts per table.
        max_new_tokens: Token budget of each completion.
        temperature: Sampling temperature; 0 is greedy.
        key: Name of the W&B table.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        num_prompts: int = 8,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        key: str = "samples",
    ) -> None:
        if every_n_steps < 1 or num_prompts < 1:
            raise ValueError(f"every_n_steps and num_prompts must be >= 1, got {every_n_steps}, {num_prompts}")
        self.every_n_steps, self.num_prompts = every_n_steps, num_prompts
        self.max_new_tokens, self.temperature, self.key = max_new_tokens, temperature, key
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if step == 0 or step == self._last_step or step % self.every_n_steps:
            return
        self._last_step = step
        rows = self.sample(trainer, pl_module)
        if not trainer.is_global_zero or not rows:
            return
        data = [[step, r["prompt"], r["completion"], r["answer"], r["correct"]] for r in rows]
        for logger in trainer.loggers:
            if hasattr(logger, "log_table"):
                logger.log_table(key=self.key, columns=COLUMNS, data=data, step=step)
        path = Path(trainer.log_dir or trainer.default_root_dir) / "samples.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            for row in data:
                f.write(json.dumps(dict(zip(COLUMNS, row))) + "\n")

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
            correct = None if answer is None else is_equivalent(extract_answer(text), answer)
            out.append({"prompt": prompt, "completion": text, "answer": answer, "correct": correct})
        return out
