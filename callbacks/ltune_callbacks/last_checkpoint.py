"""The last step is always saved, whatever the validation interval: Lightning's ``ModelCheckpoint`` saves only after a
validation or at an epoch's end, so a run that stops in between ended with its last steps unsaved."""

from __future__ import annotations

import os

import lightning as L


class SaveOnTrainEnd(L.Callback):
    """When training ends, have the run's checkpoint callback save the last step unless it just did (``ltune fit`` adds
    this callback to every run). With no monitored metric (ltune's configs) the checkpoint callback's own file is
    written, ``epoch=<e>-step=<s>.ckpt``, replacing the older one as its ``save_top_k`` says; with a monitored metric,
    ``last.ckpt``. Nothing happens when checkpointing is off (``--trainer.enable_checkpointing false``)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ckpt = trainer.checkpoint_callback
        if ckpt is None or ckpt.dirpath is None or trainer.global_step == 0:
            return
        if getattr(ckpt, "_last_global_step_saved", None) == trainer.global_step:
            return  # the checkpoint callback saved this step already
        if ckpt.monitor is None and hasattr(ckpt, "_save_none_monitor_checkpoint"):
            ckpt._save_none_monitor_checkpoint(trainer, ckpt._monitor_candidates(trainer))
            ckpt._last_global_step_saved = trainer.global_step
            return
        path = os.path.join(ckpt.dirpath, "last.ckpt")
        trainer.save_checkpoint(path)
        ckpt.last_model_path = path


def last_checkpoint(run: str) -> str:
    """The newest checkpoint of a run folder (``<run>/checkpoints/*.ckpt``, or ``<run>/*.ckpt``)."""
    files = [
        os.path.join(d, f)
        for d in (os.path.join(run, "checkpoints"), run)
        if os.path.isdir(d)
        for f in os.listdir(d)
        if f.endswith(".ckpt")
    ]
    if not files:
        raise FileNotFoundError(2, "no checkpoint in this run folder", os.path.join(run, "checkpoints"))
    return max(files, key=os.path.getmtime)
