"""Export a Hugging Face folder when training ends."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class HFExport(L.Callback):
    """Write ``save_pretrained`` weights + tokenizer on train end (rank 0), LoRA merged by default.

    Args:
        output_dir: Destination; relative paths go under the run's log folder (``<log_dir>/hf``).
        merge_lora: Merge a LoRA adapter into the weights; otherwise write the adapter alone.
    """

    def __init__(self, output_dir: str = "hf", merge_lora: bool = True) -> None:
        self.output_dir, self.merge_lora = output_dir, merge_lora

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = Path(self.output_dir)
        if not out.is_absolute():
            out = Path(trainer.log_dir or trainer.default_root_dir) / out
        if trainer.is_global_zero:
            pl_module.export(str(out), merge_lora=self.merge_lora)
        trainer.strategy.barrier()
