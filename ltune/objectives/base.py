"""What every objective shares: the backbone (loaded in ``configure_model``), the optimizer, the non-finite-loss
guard, and evaluation by generation (:mod:`ltune.objectives.evaluation`). No method logic lives here.
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

from ltune.backbone import Backbone, fully_shard_model
from ltune.export import export_hf
from ltune.forward import reference_model
from ltune.objectives.checkpoint import FrozenOutOfCheckpoint
from ltune.objectives.evaluation import AnswerMatch, GenerationEval


class NonFiniteLossError(FloatingPointError):
    """A loss was NaN or infinite; training stops instead of stepping on it."""


class Objective(FrozenOutOfCheckpoint, GenerationEval, L.LightningModule):
    """Base LightningModule of ltune objectives. Its checkpoints hold what trains, not the frozen base model
    (:mod:`ltune.objectives.checkpoint`).

    Args:
        backbone: The model to fine-tune (default: the embedded ``tiny`` preset).
        optimizer: Optimizer factory called with the trainable parameters.
        scheduler: Optional LR scheduler factory, stepped every optimizer step.
        max_new_tokens: Token budget of generation on ``eval_prompts``.
        answer_match: How evaluation reads a reply's answer: ``strict`` (only an answer it states, boxed, after
            ``####`` or "the answer is", or a reply that is one bare value) or ``lenient`` (else its last number,
            which can score a false sentence as right). References are read the same way.
        eval_samples: Completions sampled per evaluation prompt for ``val/maj@N``, ``val/pass@1`` and ``val/pass@N``
            (1: greedy exact match only).
        eval_temperature: Sampling temperature of those completions.
    """

    def __init__(
        self,
        backbone: Backbone | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        max_new_tokens: int = 32,
        answer_match: AnswerMatch = "strict",
        eval_samples: int = 1,
        eval_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "reward_funcs"])
        self.backbone = backbone or Backbone()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.max_new_tokens = max_new_tokens
        self.model: torch.nn.Module | None = None
        self.init_evaluation(answer_match, eval_samples, eval_temperature)
        self._frozen_reference: list[torch.nn.Module] = []  # kept out of the module tree: not trained or saved

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def configure_model(self) -> None:
        if self.model is None:  # idempotent: Lightning may call it more than once
            self.model = self.backbone.load_model()
            if self.needs_reference_copy():  # before sharding: a sharded module cannot be copied
                self.keep_reference_copy()
            if self.device_mesh is not None:  # ModelParallelStrategy: FSDP2 over the data-parallel ranks
                if self.device_mesh["tensor_parallel"].size() > 1:
                    raise ValueError("ltune applies no tensor parallelism: set the strategy's tensor_parallel_size=1")
                fully_shard_model(self.model, self.device_mesh["data_parallel"])

    # ---- the reference policy (DPO, GRPO with a KL) ----------------------------------------------------------------
    def needs_reference_copy(self) -> bool:
        """Whether the objective scores with a reference policy (DPO; GRPO with a KL): then ``configure_model`` keeps
        a frozen copy of the policy as loaded, before any sharding (under FSDP2 every rank holds the whole copy)."""
        return False

    def keep_reference_copy(self) -> None:
        """Freeze a copy of the policy as loaded, when it trains without LoRA (with LoRA the reference is the policy
        with its adapter disabled, no copy). Called by ``configure_model``, before any checkpoint is restored."""
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

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Step, then free the gradients at once, as TRL's trainers do. Lightning frees them only before the next
        backward, so they would be held through the next forward: in full fine-tuning, one more copy of the weights
        at the step's peak. With gradient accumulation this runs once per accumulated step, after its last
        micro-batch."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        optimizer.zero_grad(set_to_none=True)

    def check_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Stop every rank together (no DDP hang) when any rank's loss is NaN/inf."""
        bad = self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False)
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at global step {self.global_step}, batch {batch_idx} on some rank; "
                "lower the learning rate, check the data, or use a wider dtype"
            )

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
