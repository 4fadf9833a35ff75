"""Use ltune pieces in your own script with a plain ``lightning.Trainer`` (no CLI).

python examples/custom_trainer.py --max_steps 200
"""

from __future__ import annotations

import argparse

import lightning as L
import torch

from ltune import SFT
from ltune.backbone import Backbone, LoRA
from ltune.datamodules import EmbeddedTasks, InstructionData


def main(
    max_steps: int = 200, lora: bool = False, root: str = "runs/example", n_train: int = 2000, n_eval: int = 50
) -> dict[str, float]:
    L.seed_everything(0)
    model = SFT(
        backbone=Backbone("tiny", lora=LoRA(r=8, alpha=16) if lora else None),
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3),
    )
    data = InstructionData(
        train=EmbeddedTasks(format="instruction", n=n_train),
        eval_prompts=EmbeddedTasks(format="prompts", n=n_eval, split="val"),
        batch_size=32,
        max_length=128,
    )
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", default_root_dir=root, enable_progress_bar=False)
    trainer.fit(model, data)
    (metrics,) = trainer.validate(model, data, verbose=False)
    model.export(f"{root}/hf")  # a Hugging Face folder: AutoModelForCausalLM.from_pretrained(f"{root}/hf")
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_steps", type=int, default=200)
    parser.add_argument("--lora", action="store_true")
    args = parser.parse_args()
    print(main(args.max_steps, args.lora))
