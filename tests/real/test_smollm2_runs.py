"""SmolLM2-135M-Instruct in ltune's longer paths: IFD and DEITA scoring through `ltune select`, one ReST-EM round,
two Lion rounds, and export then reload with identical logits."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from ltune.backbone import LoRA
from ltune.cli import main
from ltune.data_verbs import select
from ltune.datamodules import EmbeddedTasks, InstructionData
from ltune.objectives import SFT
from ltune.rewards import extract_answer, is_equivalent
from tests.real.conftest import FRAGMENT, NAME, ROOT

pytestmark = pytest.mark.real


@pytest.mark.parametrize("strategy", ["ifd", "deita"])
def test_selection_scores_rows_with_the_real_model(strategy, tmp_path, monkeypatch, smollm2_dir):
    monkeypatch.chdir(tmp_path)
    out = select(["--config", str(ROOT / f"configs/selection/{strategy}.yaml"), "--config", FRAGMENT,
                  "--data.init_args.pool.init_args.train.init_args.n=6", "--data.init_args.budget=3",
                  "--data.init_args.score_batch_size=3", "--data.init_args.progress=false",
                  "--output", "kept.jsonl"])  # fmt: skip
    kept = [json.loads(line) for line in open(out)]
    assert 1 <= len(kept) <= 3
    (report,) = tmp_path.rglob("selection.csv")
    table = pd.read_csv(report)
    assert len(table) == 6 and int(table["selected"].sum()) == len(kept)
    scores = table.drop(columns=["index", "selected"])
    assert scores.notna().all().all() and len(scores.columns) >= 1
    if strategy == "ifd":  # the ratio of two real model losses: positive; equal exactly for the pool's duplicate rows
        rows = EmbeddedTasks(format="pool", n=6, split="train").rows()
        distinct = len({(r["prompt"], r["response"]) for r in rows})
        assert (table["ifd"] > 0).all() and table["ifd"].round(6).nunique() == distinct


def test_one_rest_em_round_from_the_instruct_model(tmp_path, monkeypatch, smollm2_dir):
    """The real-model loop recipe, shrunk: sample, keep verified solutions, one M-step, held-out evaluation."""
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load((ROOT / "configs/loops/rest_em_smollm2.yaml").read_text())
    loop = cfg["trainer"]["callbacks"][0]["init_args"]
    loop["problems"]["init_args"].update(n=8, categories=["compare"])  # the instruct model's easiest category
    # 8 x 4 samples of 32 tokens: fewer (6 x 3 of 24 tokens) solved none, and a round without rows stops the loop
    loop.update(rounds=1, num_samples=4, max_solutions=2, max_new_tokens=32, epochs_per_round=1, chunk_size=8)
    cfg["trainer"]["callbacks"] = cfg["trainer"]["callbacks"][:1]
    cfg["trainer"]["logger"] = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                 "init_args": {"save_dir": "runs", "name": "rest_em"}}]  # fmt: skip
    cfg["trainer"]["enable_progress_bar"] = False
    cfg["model"]["init_args"]["max_new_tokens"] = 32
    cfg["data"]["init_args"].update(batch_size=4, eval_batch_size=4, max_length=96)
    cfg["data"]["init_args"]["eval_prompts"]["init_args"].update(n=4, categories=["compare"])
    (tmp_path / "rest_em.yaml").write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", "rest_em.yaml"])
    run = tmp_path / "runs/rest_em/version_0"
    (history,) = json.loads((run / "rounds/rounds.json").read_text())
    assert history["round"] == 0 and "held_out/exact_match" in history
    rows = [json.loads(line) for line in open(run / "rounds/round_0/train.jsonl")]
    assert len(rows) == history["kept"] >= 1  # the instruct model solves some comparisons when sampled
    assert all(is_equivalent(extract_answer(r["response"]), r["answer"]) for r in rows)


def test_lion_rounds_with_the_real_model(tmp_path, monkeypatch, smollm2_dir):
    """The Lion recipe, shrunk: the instruct model stands in for the exported teacher and referee (the recipe's teacher
    is the quickstart's export); imitation, one adversarial round, held-out evaluation after each."""
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load((ROOT / "configs/loops/lion_smollm2.yaml").read_text())
    loop = cfg["trainer"]["callbacks"][0]["init_args"]
    loop["instructions"]["init_args"].update(n=4, categories=["compare"])
    loop["teacher"]["init_args"]["backbone"]["name_or_path"] = NAME
    loop.update(rounds=2, num_new=2, answer_tokens=16, instruction_tokens=16, epochs_per_round=1, chunk_size=4)
    cfg["trainer"]["logger"] = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                 "init_args": {"save_dir": "runs", "name": "lion"}}]  # fmt: skip
    cfg["trainer"]["enable_progress_bar"] = False
    cfg["model"]["init_args"]["max_new_tokens"] = 16
    cfg["data"]["init_args"].update(batch_size=4, eval_batch_size=4)
    cfg["data"]["init_args"]["eval_prompts"]["init_args"].update(n=4, categories=["compare"])
    (tmp_path / "lion.yaml").write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", "lion.yaml"])
    history = json.loads((tmp_path / "runs/lion/version_0/rounds/rounds.json").read_text())
    assert [h["round"] for h in history] == [0, 1] and all("held_out/exact_match" in h for h in history)
    judged = history[1]
    assert judged["hard"] + judged["easy"] + judged["unjudged"] == 4  # every Cache Pool instruction was refereed
    assert 1 <= judged["referee_teacher"] <= 10 and 1 <= judged["referee_student"] <= 10
    assert judged["train_pool"] >= 4


def test_export_then_reload_gives_identical_logits(tmp_path, monkeypatch, smollm2_dir):
    """LoRA merged into the weights, or the adapter alone over a base path that is not this machine's cache: both
    reload (transformers, peft) to the trained adapter model's logits, generate, and render the trained system
    prompt."""
    import lightning as L
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from ltune.backbone import Backbone

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    system = "Solve the problem, then end your reply with: The answer is <answer>."
    model = SFT(backbone=Backbone(NAME, lora=LoRA(r=8, alpha=16, dropout=0.0), system_prompt=system),
                optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))  # fmt: skip
    data = InstructionData(train=EmbeddedTasks(n=4, categories=["add"]), batch_size=2, max_length=64)
    L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, data)  # fmt: skip
    out, adapter = model.export("hf"), model.export("adapter", merge_lora=False)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert not base_path.startswith("/") and base_path.endswith(smollm2_dir.name)  # relative to where export ran
    peft_model = AutoPeftModelForCausalLM.from_pretrained(adapter, dtype=torch.float32).eval()
    conversation = [{"role": "user", "content": "What is 7+8?"}]
    text = AutoTokenizer.from_pretrained(out).apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    assert text == data.render(conversation)[0] and system in text  # as trained (data took the backbone's prompt)
    ids = torch.tensor([model.tokenizer(text)["input_ids"]])
    model.model.eval()
    with torch.no_grad():
        trained, again = model.model(input_ids=ids).logits, reloaded(input_ids=ids).logits
        via_peft = peft_model(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()(input_ids=ids).logits
    assert not torch.allclose(trained, base, atol=1e-4)  # the adapter learned something, so the check has teeth
    torch.testing.assert_close(again, trained, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(via_peft, trained, atol=1e-4, rtol=1e-4)
    assert reloaded.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]
    assert (out / "tokenizer.json").is_file() and (out / "chat_template.jinja").is_file()


def test_the_quickstart_config_runs_shortened_and_exports(tmp_path, monkeypatch, capsys, smollm2_dir):
    """README's first command, shortened: validation before and after, LoRA steps, the merged export."""
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(ROOT / "configs/quickstart_smollm2.yaml"), "--trainer.max_steps=2",
          "--data.init_args.eval_prompts.init_args.n=4", "--trainer.enable_progress_bar=false",
          "--data.init_args.train.init_args.n=16"])  # fmt: skip
    out = capsys.readouterr().out
    assert "validation before -> after fit" in out and "val/exact_match" in out
    hf = tmp_path / "runs/quickstart_smollm2/version_0/hf"
    assert (hf / "model.safetensors").is_file() and (hf / "chat_template.jinja").is_file()


def _lora_fit(root, steps: int, ckpt: str | None = None, every: int | None = None):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from ltune.backbone import Backbone

    L.seed_everything(0)
    model = SFT(backbone=Backbone(NAME, lora=LoRA(r=16, alpha=32, dropout=0.05)),
                optimizer=lambda p: torch.optim.AdamW(p, lr=3e-4))  # fmt: skip
    data = InstructionData(train=EmbeddedTasks(n=32, categories=["add"]), batch_size=2, max_length=64, seed=0)
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    saver = [ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)] if every else []
    L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=bool(saver), callbacks=[Record(), *saver]).fit(
        model, data, ckpt_path=ckpt, weights_only=False if ckpt else None)  # fmt: skip
    return model, losses


def test_a_lora_checkpoint_is_adapter_sized_and_resumes_as_the_uninterrupted_run(tmp_path, smollm2_dir):
    """SmolLM2 + LoRA r 16 (dropout on): the checkpoint holds the adapter, AdamW's state and the run's (no base),
    within 1.2x of adapter + optimizer; 2 steps + resume 2 equal 4 straight steps (losses and weights, rel 1e-6)."""
    straight, losses = _lora_fit(tmp_path / "a", steps=4)
    _, first = _lora_fit(tmp_path / "b", steps=2, every=2)
    (ckpt,) = (tmp_path / "b").glob("*.ckpt")
    resumed, second = _lora_fit(tmp_path / "c", steps=4, ckpt=str(ckpt))
    torch.testing.assert_close(torch.tensor(first + second), torch.tensor(losses), rtol=1e-6, atol=0)
    trained = {n: p for n, p in straight.model.named_parameters() if p.requires_grad}
    for name, p in resumed.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, trained[name], rtol=1e-6, atol=1e-8, msg=name)
    adapter_and_adam = 3 * 4 * sum(p.numel() for p in trained.values())  # float32 weights, exp_avg, exp_avg_sq
    assert ckpt.stat().st_size < 1.2 * adapter_and_adam, (ckpt.stat().st_size, adapter_and_adam)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["ltune_frozen"]["base"]["name_or_path"] == NAME and "torch" in saved["ltune_rng"][0]
