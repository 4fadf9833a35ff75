"""Exporting a trained model as a Hugging Face folder (LoRA merged by default), for ``ltune export``, callbacks and
any downstream loader (``AutoModelForCausalLM``, vLLM)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from torch import nn

log = logging.getLogger(__name__)


def export_hf(
    model: nn.Module, tokenizer, output_dir: str | Path, merge_lora: bool = True, inplace: bool = False
) -> Path:
    """Write a Hugging Face folder that ``AutoModelForCausalLM.from_pretrained`` and vLLM load.

    Args:
        model: The trained model (optionally a peft model).
        tokenizer: Saved beside the weights (with its chat template).
        output_dir: Destination folder.
        merge_lora: Merge a LoRA adapter into the weights (default); otherwise save the adapter alone.
        inplace: Merge in place (cheaper; the model is unusable for training afterwards).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload") and merge_lora:
        model = (model if inplace else copy.deepcopy(model)).merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("exported Hugging Face folder to %s", out)
    return out
