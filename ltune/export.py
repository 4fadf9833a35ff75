"""Exporting a trained model as a Hugging Face folder (LoRA merged by default), for ``ltune export``, callbacks and
any downstream loader (``AutoModelForCausalLM``, peft, vLLM), served as it was trained: its chat template inserts the
system prompt the run's prompts were rendered with."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from torch import nn

log = logging.getLogger(__name__)


def with_system_prompt(template: str, system_prompt: str) -> str:
    """``template`` that puts ``system_prompt`` first in every conversation that brings no system message of its own
    (what training did), then renders as before."""
    literal = json.dumps(system_prompt, ensure_ascii=False)  # quotes, backslashes, newlines escaped as Jinja reads them
    head = (
        "{%- if not messages or messages[0]['role'] != 'system' -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages -%}}"
        "{%- endif -%}"
    )
    return head + template


@contextlib.contextmanager
def _swapped(obj, name: str, value) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def export_hf(
    model: nn.Module,
    tokenizer,
    output_dir: str | Path,
    merge_lora: bool = True,
    inplace: bool = False,
    system_prompt: str | None = None,
    base_model: str | None = None,
) -> Path:
    """Write a Hugging Face folder that ``AutoModelForCausalLM.from_pretrained`` and vLLM load (or, with
    ``merge_lora=False``, a peft adapter folder that ``AutoPeftModelForCausalLM.from_pretrained`` loads).

    Args:
        model: The trained model (optionally a peft model).
        tokenizer: Saved beside the weights (with its chat template).
        output_dir: Destination folder.
        merge_lora: Merge a LoRA adapter into the weights (default); otherwise save the adapter alone.
        inplace: Merge in place (cheaper; the model is unusable for training afterwards).
        system_prompt: The system message training put before prompts without one: the saved chat template
            inserts it the same way. ``None`` keeps the template as it is (as trained without one).
        base_model: The adapter's ``base_model_name_or_path`` (a Hub id or a path); ``None`` keeps peft's.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload") and merge_lora:
        model = (model if inplace else copy.deepcopy(model)).merge_and_unload()
    with contextlib.ExitStack() as stack:
        if base_model and hasattr(model, "peft_config"):
            for config in model.peft_config.values():
                stack.enter_context(_swapped(config, "base_model_name_or_path", base_model))
        model.save_pretrained(out)
        template = getattr(tokenizer, "chat_template", None)
        if system_prompt and isinstance(template, str):
            stack.enter_context(_swapped(tokenizer, "chat_template", with_system_prompt(template, system_prompt)))
        elif system_prompt and isinstance(template, dict):  # named templates (default, tool_use, ...): each one
            named = {k: with_system_prompt(v, system_prompt) for k, v in template.items()}
            stack.enter_context(_swapped(tokenizer, "chat_template", named))
        elif system_prompt:
            log.warning("the tokenizer has no chat template: the export cannot insert the trained system prompt")
        tokenizer.save_pretrained(out)
    log.info("exported Hugging Face folder to %s", out)
    return out
