import runpy
from pathlib import Path

from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]


def test_custom_trainer_example_runs_and_exports(tmp_path):
    example = runpy.run_path(str(ROOT / "examples/custom_trainer.py"))
    metrics = example["main"](max_steps=3, lora=True, root=str(tmp_path), n_train=96, n_eval=4)
    assert 0.0 <= metrics["val/exact_match"] <= 1.0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "hf").config.model_type == "llama"
