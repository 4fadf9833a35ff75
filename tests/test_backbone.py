"""Backbone: tiny preset, loading by local path (the real-model code path), LoRA, log-probs, export."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ltune.backbone import LoRA
from ltune.export import export_hf
from ltune.forward import completion_logprobs, reference_model
from ltune.objectives import SFT
from tests.conftest import micro_backbone


def _batch(tok):
    ids = [
        tok("Q: 1+2?\nA: 3", add_special_tokens=False).input_ids,
        tok("Q: 9?\nA: no", add_special_tokens=False).input_ids,
    ]
    n = max(map(len, ids))
    input_ids = torch.tensor([x + [tok.pad_token_id] * (n - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids])
    labels = input_ids.masked_fill(mask == 0, -100)
    labels[:, :6] = -100  # prompt
    return input_ids, mask, labels


def _reference_logprobs(model, input_ids, mask, labels):
    logits = model(input_ids=input_ids, attention_mask=mask).logits.double()[:, :-1]
    targets = labels[:, 1:]
    lp = logits.log_softmax(-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return lp * (targets != -100)


def test_tiny_is_deterministic_and_chat_templated(backbone):
    a, b = backbone.load_model(), micro_backbone().load_model()
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    text = backbone.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "Q: hi\nA: "


def test_objective_init_does_not_load_weights(backbone):
    assert SFT(backbone=backbone).model is None


def test_completion_logprobs_match_full_logits(backbone):
    model = backbone.load_model()
    ids, mask, labels = _batch(backbone.tokenizer)
    lp = completion_logprobs(model, ids, mask, labels).logprobs
    assert lp.dtype == torch.float32 and lp.shape == (2, ids.shape[1] - 1)
    torch.testing.assert_close(lp.double(), _reference_logprobs(model, ids, mask, labels), atol=1e-5, rtol=1e-5)


def test_lora_reference_is_adapter_disabled_and_logprobs_flow_through_lora():
    bb = micro_backbone(lora=LoRA(r=4, alpha=8, dropout=0.0))
    model = bb.load_model()
    ids, mask, labels = _batch(bb.tokenizer)
    base = _reference_logprobs(model, ids, mask, labels)  # lora_B = 0 at init: same as base
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    lp = completion_logprobs(model, ids, mask, labels)
    torch.testing.assert_close(
        lp.logprobs.double(), _reference_logprobs(model, ids, mask, labels), atol=1e-5, rtol=1e-5
    )
    assert not torch.allclose(lp.logprobs.double(), base, atol=1e-3)
    with reference_model(model):
        ref = completion_logprobs(model, ids, mask, labels).logprobs
    torch.testing.assert_close(ref.double(), base, atol=1e-5, rtol=1e-5)
    lp.logprobs.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert (
        grads and all("lora" in n for n in grads) and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    )


def test_load_by_local_path_and_export_roundtrip(tmp_path):
    bb = micro_backbone(lora=LoRA(r=4, alpha=8, dropout=0.0))
    model = bb.load_model()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    ids, mask, labels = _batch(bb.tokenizer)
    expected = model(input_ids=ids, attention_mask=mask).logits
    out = export_hf(model, bb.tokenizer, tmp_path / "hf")
    assert not any("lora" in k for k in AutoModelForCausalLM.from_pretrained(out).state_dict())
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(reloaded(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=1e-4)
    # the real-model path: a local folder, loaded by path through the same Backbone
    from ltune.backbone import Backbone

    local = Backbone(name_or_path=str(out))
    assert isinstance(AutoTokenizer.from_pretrained(out), type(bb.tokenizer))
    assert local.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "Q: x\n"
    torch.testing.assert_close(
        local.load_model()(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=1e-4
    )


def test_a_model_loaded_by_path_trains_in_train_mode(tmp_path):
    # from_pretrained returns eval mode and Lightning's fit keeps each module's mode: LoRA/attention dropout would be
    # silently off for every real model, unlike the tiny preset (built from a config, in train mode)
    from ltune.backbone import Backbone

    out = export_hf(micro_backbone().load_model(), micro_backbone().tokenizer, tmp_path / "hf")
    model = Backbone(name_or_path=str(out), lora=LoRA(r=4, alpha=8, dropout=0.5)).load_model()
    assert model.training and all(m.training for m in model.modules())
    ids, mask, _ = _batch(micro_backbone().tokenizer)
    with torch.no_grad():  # LoRA B starts at 0: give the adapter an output so its dropout shows
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    a, b = model(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(a, b)  # dropout active: two forwards differ


def test_hub_kernels_are_off_unless_asked_whatever_the_environment_says(tmp_path, monkeypatch):
    # transformers >= 5.25 kernelizes every from_pretrained model when Hugging Face's `kernels` is installed, unless
    # USE_HUB_KERNELS disables it: ltune asks explicitly, so both sides of a comparison load the same way everywhere
    from ltune.backbone import Backbone

    monkeypatch.setenv("USE_HUB_KERNELS", "YES")
    out = export_hf(micro_backbone().load_model(), micro_backbone().tokenizer, tmp_path / "hf")
    assert Backbone(name_or_path=str(out)).load_model().use_kernels is False
    assert Backbone(name_or_path=str(out)).hub_kernels is False


def test_last_token_states_reads_the_last_real_token_on_either_padding_side():
    from ltune.forward import last_token_states

    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    assert torch.equal(last_token_states(hidden, right), torch.stack([hidden[0, 1], hidden[1, 3]]))
    assert torch.equal(last_token_states(hidden, left), torch.stack([hidden[0, 3], hidden[1, 3]]))


def test_every_lora_config_field_reaches_peft_from_yaml(tmp_path):
    """A backbone's ``lora`` takes ``peft.LoraConfig``'s own fields from YAML (DoRA, rsLoRA, modules_to_save,
    layers_to_transform); the short form stays."""
    from peft import LoraConfig

    from ltune.cli import LTuneCLI, _cli
    from tests.conftest import MICRO, ROOT

    full = "{r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj], use_dora: true, use_rslora: true, " \
        "modules_to_save: [norm], layers_to_transform: [1], lora_dropout: 0.0}"  # fmt: skip
    base = ["--config", str(ROOT / "configs/objectives/sft.yaml"), *MICRO, f"--trainer.default_root_dir={tmp_path}"]
    cli = _cli(LTuneCLI, [*base, f"--model.init_args.backbone.lora={full}"], run=False)
    assert isinstance(cli.model.backbone.lora, LoraConfig)
    cli.model.configure_model()
    model = cli.model.model
    cfg = model.peft_config["default"]
    assert cfg.use_dora and cfg.use_rslora and cfg.task_type == "CAUSAL_LM"
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in names)  # DoRA's magnitude
    assert {n.split(".layers.")[1].split(".")[0] for n in names if "lora_" in n} == {"1"}  # layer 1 only
    assert {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in names if "lora_A" in n} == {"q_proj", "v_proj"}
    assert any("modules_to_save" in n and ".norm." in n for n in names)
    q = model.base_model.model.model.layers[1].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(8 / 4**0.5)  # rsLoRA: alpha / sqrt(r), not alpha / r

    short = _cli(LTuneCLI, [*base, "--model.init_args.backbone.lora={r: 4, alpha: 8}"], run=False).model.backbone
    assert isinstance(short.lora, LoRA) and short.lora_config().lora_alpha == 8
    assert short.lora_config().target_modules == "all-linear"


def test_the_export_serves_the_system_prompt_it_trained_with(tmp_path, monkeypatch):
    """The exported tokenizer renders a conversation as training rendered it: the run's system prompt first."""
    from ltune.cli import main
    from ltune.datamodules import InstructionData
    from tests.conftest import MICRO, ROOT

    monkeypatch.chdir(tmp_path)
    system = 'Answer "briefly" 🙂 {{ no jinja }}.\nEnd with: The answer is <answer>.'
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/objectives/sft.yaml"),
        *MICRO,
        "--trainer.max_steps=1",
        "--trainer.logger=false",
        f"--data.init_args.system={system}",
    ]  # the data's: recorded in the checkpoint
    main(args)
    out = tmp_path / "hf"
    main(["export", "--ckpt_path", str(tmp_path / "checkpoints"), "--output_dir", str(out)])
    exported = AutoTokenizer.from_pretrained(out)
    data = InstructionData()
    data.tokenizer, data.default_system = micro_backbone().tokenizer, system
    conversation = [{"role": "user", "content": "What is 2+3?"}]
    trained = data.render(conversation)[0]
    assert system in trained
    assert exported.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == trained
    own = [{"role": "system", "content": "Another."}, *conversation]  # a conversation's own system message wins
    data.default_system = None
    assert exported.apply_chat_template(own, tokenize=False, add_generation_prompt=True) == data.render(own)[0]
