"""What every objective shares: the backbone (loaded in ``configure_model``), the optimizer, the non-finite-loss
guard, and evaluation by greedy generation + exact match of the final answer. No method logic lives here.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor

from ltune.backbone import Backbone, fully_shard_model, reference_model
from ltune.export import export_hf
from ltune.generation import GenerationProgress, HFSampler, decode
from ltune.metrics import ExactMatch
from ltune.objectives.checkpoint import FrozenOutOfCheckpoint


class NonFiniteLossError(FloatingPointError):
    """A loss was NaN or infinite; training stops instead of stepping on it."""


class Objective(FrozenOutOfCheckpoint, L.LightningModule):
    """Base LightningModule of ltune objectives. Its checkpoints hold what trains, not the frozen base model
    (:mod:`ltune.objectives.checkpoint`).

    Args:
        backbone: The model to fine-tune (default: the embedded ``tiny`` preset).
        optimizer: Optimizer factory called with the trainable parameters.
        scheduler: Optional LR scheduler factory, stepped every optimizer step.
        max_new_tokens: Token budget of greedy generation on ``eval_prompts``.
    """

    def __init__(
        self,
        backbone: Backbone | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        max_new_tokens: int = 32,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "reward_funcs"])
        self.backbone = backbone or Backbone()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.max_new_tokens = max_new_tokens
        self.model: torch.nn.Module | None = None
        self.exact_match = ExactMatch()
        self.category_match: dict[str, ExactMatch] = {}
        self._frozen_reference: list[torch.nn.Module] = []  # kept out of the module tree: not trained or saved

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def configure_model(self) -> None:
        if self.model is None:  # idempotent: Lightning may call it more than once
            self.model = self.backbone.load_model()
            if self.device_mesh is not None:  # ModelParallelStrategy: FSDP2 over the data-parallel ranks
                if self.device_mesh["tensor_parallel"].size() > 1:
                    raise ValueError("ltune applies no tensor parallelism: set the strategy's tensor_parallel_size=1")
                fully_shard_model(self.model, self.device_mesh["data_parallel"])

    # ---- the reference policy (DPO, GRPO with a KL) ----------------------------------------------------------------
    def keep_reference_copy(self) -> None:
        """Freeze a copy of the policy as loaded, when it trains without LoRA (with LoRA the reference is the policy
        with its adapter disabled, no copy). Call from ``configure_model``, before any checkpoint is restored."""
        if self.backbone.lora is None and not self._frozen_reference:
            self._frozen_reference.append(copy.deepcopy(self.model).eval().requires_grad_(False))

    def drop_reference_copy(self) -> None:
        """Free the frozen copy (e.g. once every reference log-prob a run needs is cached)."""
        self._frozen_reference.clear()

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The reference policy under ``no_grad``: the frozen copy when there is one, else the policy with its LoRA
        adapter disabled."""
        with torch.no_grad():
            if self._frozen_reference:
                yield self._frozen_reference[0].to(self.device)
            else:
                with reference_model(self.model):
                    yield self.model

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"},
        }

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log ``train/learning_rate`` and ``train/grad_norm`` (the total 2-norm of the gradients that step, before
        any clipping), as TRL's trainers do."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: the norm over every shard
        if isinstance(self.trainer.strategy, FSDPStrategy):  # FSDP1: each rank holds a shard of each gradient
            norm = self.trainer.strategy.reduce(norm.square(), reduce_op="sum").sqrt()
        if grads or norm.item():
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        self.log("train/learning_rate", float(optimizer.param_groups[0]["lr"]), on_step=True, on_epoch=False)

    def check_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Stop every rank together (no DDP hang) when any rank's loss is NaN/inf."""
        bad = self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False)
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at global step {self.global_step}, batch {batch_idx} on some rank; "
                "lower the learning rate, check the data, or use a wider dtype"
            )

    # ---- evaluation by generation --------------------------------------------------------------------------------
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
        """Exact match of the final answer of greedy completions (``val/exact_match`` and per category)."""
        texts = self.generate_text(batch["prompt_ids"], batch["prompt_mask"])
        self.exact_match.update(texts, batch["answer"])
        for cat in sorted(set(batch["category"])):
            idx = [i for i, c in enumerate(batch["category"]) if c == cat]
            self._category_metric(cat).update([texts[i] for i in idx], [batch["answer"][i] for i in idx])

    def _category_metric(self, category: str) -> ExactMatch:
        if category not in self.category_match:  # created lazily, outside inference mode so states stay updatable
            with torch.inference_mode(False):
                self.category_match[category] = ExactMatch().to(self.device)
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

    def _log_exact_match(self) -> None:
        if self.exact_match.update_count:
            self.log("val/exact_match", self.exact_match.compute(), sync_dist=False)
            self.exact_match.reset()
        cats = set(self.category_match)
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # same metrics on every rank
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, cats)
            cats = set().union(*gathered)
        if cats == {"all"}:  # no row names a category ("all" is the data's default): val/exact_match says it all
            cats = set()
            if "all" in self.category_match:  # a rank without evaluation rows has none
                self.category_match["all"].reset()
        for cat in sorted(cats):
            metric = self._category_metric(cat)
            self.log(f"val/exact_match/{cat}", metric.compute())
            metric.reset()

    def trained_system_prompt(self) -> str | None:
        """The system message this run's prompts are rendered with: the attached DataModule's, else the one its
        checkpoint recorded, else the backbone's ``system_prompt``."""
        data = self._trainer and getattr(self._trainer, "datamodule", None)
        if data is not None and hasattr(data, "system_message"):
            return data.system_message()
        return getattr(self, "_trained_system", None) or self.backbone.system_prompt

    def export(self, output_dir: str, merge_lora: bool = True, base_model: str | None = None) -> Path:
        """Write a Hugging Face folder (LoRA merged by default) whose chat template inserts the system prompt the run
        trained with; returns it. ``base_model``: the adapter's base path (:func:`ltune.export.export_hf`)."""
        system, base = self.trained_system_prompt(), base_model or self.backbone.portable_path()
        return export_hf(self.model, self.tokenizer, output_dir, merge_lora, system_prompt=system, base_model=base)
