"""SmolLM2-135M-Instruct through ltune: exact log-probs at vocab 49,152, completion masks under its ChatML template,
generation that stops at its eos, export that reloads with identical logits, and every objective's optimizer steps
through the real CLI (LoRA from configs/models/smollm2.yaml; full fine-tuning for SFT and GRPO)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from transformers import AutoModelForCausalLM

from ltune.cli import LTuneCLI
from ltune.datamodules import EmbeddedTasks, InstructionData
from ltune.datamodules.base import LTuneData
from ltune.forward import completion_logprobs, hidden_states, unwrap
from ltune.generation import HFSampler, decode, terminated
from ltune.kernels import IGNORE_INDEX as IGNORE
from ltune.objectives.base import Objective
from tests.conftest import write_jsonl
from tests.datamodules.test_layouts import CLI_LAYOUTS
from tests.datamodules.test_layouts import GROUP as LAYOUT_GROUP
from tests.real.conftest import FRAGMENT, ROOT

pytestmark = pytest.mark.real
SYSTEM = "Solve the problem, then end your reply with: The answer is <answer>."


def _data(backbone, system=None) -> InstructionData:
    data = InstructionData(train=EmbeddedTasks(n=4, categories=["add"]), max_length=64, system=system)
    data.tokenizer = backbone.tokenizer
    return data


def test_completion_mask_covers_exactly_the_response_and_im_end(smollm2):
    tok = smollm2.tokenizer
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|im_end|>")
    for system in (None, SYSTEM):
        enc = _data(smollm2, system).encode_pair("What is 2+3?", "2+3=5. The answer is 5.")
        ids, labels = enc["input_ids"], enc["labels"]
        first = next(i for i, x in enumerate(labels) if x != IGNORE)
        assert all(x == IGNORE for x in labels[:first]) and labels[first:] == ids[first:]
        assert tok.decode(labels[first:]) == "2+3=5. The answer is 5.<|im_end|>"
        prompt = tok.decode(ids[:first])
        assert prompt.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
        # no system message given: the template's own default; given one: exactly it, once
        expected = SYSTEM if system else "You are a helpful AI assistant named SmolLM"
        assert prompt.startswith(f"<|im_start|>system\n{expected}") and prompt.count("<|im_start|>system") == 1


def test_backbone_system_prompt_is_the_default_and_data_system_wins(smollm2):
    data = _data(smollm2)
    data.default_system = "from the backbone"
    assert data.render("hi")[0].startswith("<|im_start|>system\nfrom the backbone<|im_end|>")
    data.system = "from the data"
    assert data.render("hi")[0].startswith("<|im_start|>system\nfrom the data<|im_end|>")


def test_torch_logprobs_equal_float64_full_logits(smollm2, smollm2_model):
    tok, data = smollm2.tokenizer, _data(smollm2, SYSTEM)
    encs = [data.encode_pair(p, r) for p, r in [("What is 12+30?", "12+30=42. The answer is 42."),
                                                  ("Reverse abc.", "cba")]]  # fmt: skip
    batch = data.collate(encs)
    out = completion_logprobs(smollm2_model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        h = hidden_states(smollm2_model, batch["input_ids"], batch["attention_mask"])[:, :-1].double()
        w = unwrap(smollm2_model).get_output_embeddings().weight.double()
        assert w.shape[0] == len(tok) == 49152
        ref = torch.log_softmax(h @ w.T, -1)
    labels = batch["labels"][:, 1:]
    scored = labels != IGNORE
    want = ref.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * scored
    assert out.logprobs.dtype == torch.float32
    torch.testing.assert_close(out.logprobs.double(), want, atol=2e-5, rtol=1e-5)
    assert bool((out.logprobs[~scored] == 0).all())


def test_generation_stops_at_im_end(smollm2, smollm2_model):
    tok, data = smollm2.tokenizer, _data(smollm2, SYSTEM)
    batch = data.collate([{"prompt_ids": data.encode_prompt(p)} for p in ("What is 17+25?", "Say hello.")])
    samples = HFSampler()(smollm2_model, batch["prompt_ids"], batch["prompt_mask"], max_new_tokens=64,
                          temperature=0.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    assert terminated(samples, tok.eos_token_id).all()  # both short answers stopped at <|im_end|> within the budget
    lengths = samples.completion_mask.sum(1)
    for ids, n in zip(samples.completion_ids, lengths):
        assert ids[n - 1] == tok.eos_token_id and (ids[n:] == tok.pad_token_id).all()
    texts = decode(tok, samples)
    assert all(t.strip() and "<|im_end|>" not in t and "<|im_start|>" not in t for t in texts)


def fit(tmp_path: Path, monkeypatch, config: str, *overrides: str, lora: bool = True) -> LightningCLI:
    """``ltune fit --config <config> --config configs/models/smollm2.yaml`` in-process, two optimizer steps."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(ROOT / config), "--config", FRAGMENT, "--validate_around_fit=false",
            "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
            "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]", "--data.init_args.batch_size=2",
            *overrides]  # fmt: skip
    if not lora:
        args += ["--config", FRAGMENT.replace("smollm2.yaml", "smollm2_full.yaml")]
    return LTuneCLI(Objective, LTuneData, subclass_mode_model=True, subclass_mode_data=True, args=args,
                    save_config_kwargs={"overwrite": True})  # fmt: skip


def _stepped(cli: LightningCLI, lora: bool) -> None:
    assert cli.trainer.global_step == 2
    loss = cli.trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss), loss
    params = dict(cli.model.model.named_parameters())
    if lora:  # LoRA B starts at zero: non-zero after the steps means the optimizer stepped on the real model
        b = [p for n, p in params.items() if "lora_B" in n]
        assert b and all(p.requires_grad for p in b) and any(p.abs().sum() > 0 for p in b)
        assert not any(p.requires_grad for n, p in params.items() if "lora_" not in n)
    else:
        base = AutoModelForCausalLM.from_pretrained(cli.model.backbone.path)
        w = "model.layers.0.mlp.down_proj.weight"
        assert not torch.equal(params[w].detach(), base.state_dict()[w])


SMALL = ["--data.init_args.train.init_args.n=4", "--data.init_args.val.init_args.n=2"]
GROUP = ["--data.init_args.train.init_args.n=4", "--data.init_args.val.init_args.n=2",
         "--model.init_args.max_completion_length=8"]  # fmt: skip
FITS = {
    "sft": ("configs/objectives/sft.yaml", SMALL),
    "orpo": ("configs/objectives/orpo.yaml", SMALL),
    "dpo": ("configs/objectives/dpo.yaml", [*SMALL, "--model.init_args.precompute_ref_log_probs=true"]),
    "simpo": ("configs/objectives/simpo.yaml", SMALL),
    "cut": ("configs/objectives/cut.yaml", SMALL),
    "coin": ("configs/objectives/coin.yaml", SMALL),
    "ttrl": ("configs/objectives/ttrl.yaml", [*GROUP, "--model.init_args.num_votes=4",
                                              "--model.init_args.num_generations=2"]),
    "rlsc": ("configs/objectives/rlsc.yaml", [*GROUP, "--model.init_args.num_samples=4"]),
    "reward_model": ("configs/objectives/rlaif_reward_model.yaml",
                     [*SMALL, "--data.init_args.labels_path=labels/train.jsonl"]),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(FITS))
def test_two_lora_steps_through_the_cli(method, tmp_path, monkeypatch, smollm2_dir):
    config, overrides = FITS[method]
    _stepped(fit(tmp_path, monkeypatch, config, *overrides), lora=True)


USER_DATA = {"sft": "chat", "dpo": "preference", "ttrl": "prompts"}  # configs/data/<name>_jsonl.yaml


@pytest.mark.parametrize("method", sorted(USER_DATA))
def test_a_users_jsonl_in_trls_layout_trains_the_real_model(method, tmp_path, monkeypatch, smollm2_dir):
    """Multi-turn conversations (every assistant turn), conversational preference pairs and prompt-only rows."""
    name = USER_DATA[method]
    group = ["--model.init_args.num_votes=4", "--model.init_args.num_generations=2",
             "--model.init_args.max_completion_length=8"] if method == "ttrl" else []  # fmt: skip
    data = ["--config", str(ROOT / f"configs/data/{name}_jsonl.yaml"),
            f"--data.init_args.train={ROOT}/examples/data/{name}.jsonl"]  # fmt: skip
    cli = fit(tmp_path, monkeypatch, f"configs/objectives/{method}.yaml", *data, *group)
    _stepped(cli, lora=True)


def test_grpo_on_a_users_reward_module_trains_the_real_model(tmp_path, monkeypatch, smollm2_dir):
    """configs/objectives/grpo.yaml with configs/rewards/my_module.yaml: examples/rewards.py beside a built-in."""
    prompts = f"--data.init_args.train={ROOT}/examples/data/prompts.jsonl"
    module = str(ROOT / "configs/rewards/my_module.yaml")
    group = ["--model.init_args.num_generations=2", "--model.init_args.max_completion_length=16"]
    cli = fit(tmp_path, monkeypatch, "configs/objectives/grpo.yaml", "--config", module, prompts, *group)
    _stepped(cli, lora=True)
    logged = cli.trainer.callback_metrics
    for name in ("last_number_matches", "format_reward"):
        assert torch.isfinite(logged[f"train/rewards/{name}/mean"]), name


@pytest.mark.parametrize("layout", list(CLI_LAYOUTS))
def test_each_trl_layout_trains_the_real_model(layout, tmp_path, monkeypatch, smollm2_dir):
    """Every layout of TRL's dataset-formats guide (tests/datamodules/test_layouts.py's rows), as a user's jsonl."""
    config, row, flags = CLI_LAYOUTS[layout]
    train = write_jsonl(tmp_path / "train.jsonl", [row] * 4)
    prompts = ["--config", str(ROOT / "configs/data/prompts_jsonl.yaml"), *LAYOUT_GROUP] if "ttrl" in config else []
    data = [f"--data.init_args.train={train}", "--data.init_args.val=null", "--data.init_args.eval_prompts=null"]
    _stepped(fit(tmp_path, monkeypatch, config, *prompts, *flags, *data), lora=True)


@pytest.mark.parametrize("method", ["sft", "ttrl", "dpo"])  # dpo: the frozen reference copy, precomputed
def test_two_full_fine_tuning_steps_through_the_cli(method, tmp_path, monkeypatch, smollm2_dir):
    config, overrides = FITS[method]
    _stepped(fit(tmp_path, monkeypatch, config, *overrides, lora=False), lora=False)
