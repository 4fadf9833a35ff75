"""Keep the best round of a self-training loop (ReST-EM, step 5: "evaluate on held-out data and keep the best
iteration"): after each round's M-step the held-out metric is compared with the best so far; an improvement writes
that round's trainable weights to ``round_<r>/model.pt`` (atomically, rank 0), and at the end of the last round the
best round's weights are loaded back into the model, before any ``on_train_end`` hook (so ``HFExport`` writes them
whatever the callback order). The best round's index, value and file go into the loop's checkpoint state, so a resumed
run restores the same weights. Files of rounds that were not the best are removed once the loop has ended.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ltune.io import atomic_write


class BestRound:
    """Tracks the best round by a held-out metric and keeps its trainable weights on disk.

    Args:
        monitor: The validation metric read from ``trainer.callback_metrics`` after each round's M-step.
        mode: ``"max"`` (higher is better) or ``"min"``.
    """

    def __init__(self, monitor: str = "val/exact_match", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.round: int | None = None
        self.value: float | None = None
        self.path: str | None = None

    def value_of(self, trainer: L.Trainer) -> float | None:
        """The monitored metric now, or None when it was not logged (or is NaN)."""
        value = trainer.callback_metrics.get(self.monitor)
        value = None if value is None else float(value)
        return None if value is None or math.isnan(value) else value

    def better(self, value: float) -> bool:
        """Strictly better than the best so far (ties keep the earlier round)."""
        if self.value is None:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def worse(self, value: float) -> bool:
        """Strictly worse than the best so far (a regression)."""
        return self.value is not None and value != self.value and not self.better(value)

    def update(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        round: int,
        value: float,
        folder: Path,
        save: bool = True,
    ) -> bool:
        """Make ``round`` the best one if ``value`` is better, writing its trainable weights when ``save``; True if
        it was."""
        if not self.better(value):
            return False
        self.round, self.value, self.path = round, value, None
        if not save:
            return True
        path = Path(folder) / f"round_{round}" / "model.pt"
        if trainer.is_global_zero:
            atomic_write(path, lambda f: torch.save(trainable_state(pl_module.model), f))
        trainer.strategy.barrier("best-round-saved")
        self.path = str(path)
        return True

    def restore(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int) -> None:
        """At the end of the loop (``round`` was the last one trained): load the best round's weights into
        ``pl_module.model`` unless it is ``round`` itself, then remove the other rounds' weight files."""
        if self.path is None:
            return
        if self.round != round:
            self._load(trainer, pl_module)
        trainer.strategy.barrier("best-round-restored")
        if trainer.is_global_zero:
            for stale in Path(self.path).parents[1].glob("round_*/model.pt"):
                if stale != Path(self.path):
                    stale.unlink()

    def _load(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not Path(self.path).exists():
            raise FileNotFoundError(f"the weights of the best round ({self.round}) are gone: {self.path}")
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        missing = set(state) - {name for name, p in pl_module.model.named_parameters() if p.requires_grad}
        if missing:
            raise RuntimeError(f"{self.path} holds weights the model does not train: {sorted(missing)[:5]}")
        pl_module.model.load_state_dict(state, strict=False)

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "value": self.value, "path": self.path}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round, self.value, self.path = state.get("round"), state.get("value"), state.get("path")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters that train (all of them, or a LoRA adapter's); frozen ones never change."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}
