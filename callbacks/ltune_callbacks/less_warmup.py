"""LESS warmup checkpoints (Xia et al., ICML 2024, arXiv:2402.04333): at the end of every epoch of a LoRA warmup run,
save the adapter, the Adam moments keyed by parameter name, and the epoch's mean learning rate.

    ltune fit --config configs/selection/less_warmup.yaml      # writes runs/less_warmup/version_N/less/epoch_*.pt
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from ltune.io import atomic_write


class LESSWarmup(L.Callback):
    """Per-epoch LESS checkpoint: ``{"params", "exp_avg", "exp_avg_sq"}`` (dicts name -> tensor over the trainable
    LoRA parameters, names relative to the objective's ``model``), ``"lr"`` (mean over the epoch's steps), ``"epoch"``.

    Args:
        output_dir: Destination; relative paths go under the run's log folder.
    """

    def __init__(self, output_dir: str = "less") -> None:
        self.output_dir = output_dir
        self._lrs: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self._lrs.append(float(trainer.optimizers[0].param_groups[0]["lr"]))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        named = [(n, p) for n, p in pl_module.model.named_parameters() if p.requires_grad]
        state = trainer.optimizers[0].state
        missing = [n for n, p in named if "exp_avg_sq" not in state.get(p, {})]
        if missing:
            raise RuntimeError(f"LESSWarmup needs an Adam-type optimizer state for every LoRA parameter; {missing[0]}")
        ckpt = {
            "params": {n: p.detach().cpu().clone() for n, p in named},
            "exp_avg": {n: state[p]["exp_avg"].detach().cpu().clone() for n, p in named},
            "exp_avg_sq": {n: state[p]["exp_avg_sq"].detach().cpu().clone() for n, p in named},
            "lr": sum(self._lrs) / max(1, len(self._lrs)),
            "epoch": trainer.current_epoch,
        }
        self._lrs = []
        out = Path(self.output_dir)
        out = out if out.is_absolute() else Path(trainer.log_dir or trainer.default_root_dir) / out
        if trainer.is_global_zero:
            atomic_write(out / f"epoch_{trainer.current_epoch}.pt", lambda f: torch.save(ckpt, f))
        trainer.strategy.barrier("less-warmup")
