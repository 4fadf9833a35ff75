"""The training bar of an ltune run: Lightning's rich progress bar, counting optimizer steps against ``max_steps``
when the run is sized in steps (Lightning's own reads ``Epoch 0/-2`` there)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class StepProgress(RichProgressBar):
    """``RichProgressBar`` whose training description is ``Step <done>/<max_steps>`` when ``max_steps`` is set (else
    Lightning's ``Epoch <e>/<last>``, without the ``/-2`` of an open-ended run). ``ltune fit`` uses it unless the
    trainer has a progress bar of its own or ``enable_progress_bar: false``.

    Args:
        **kwargs: ``RichProgressBar``'s (``refresh_rate``, ``leave``, ``theme``, ...).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return f"Step {trainer.global_step}/{trainer.max_steps}"
        text = f"Epoch {current_epoch}"
        return text + f"/{trainer.max_epochs - 1}" if trainer.max_epochs and trainer.max_epochs > 0 else text

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if self.is_enabled and self.progress is not None and self.train_progress_bar_id is not None:
            description = self._get_train_description(trainer.current_epoch)
            self.progress.update(self.train_progress_bar_id, description=description)
