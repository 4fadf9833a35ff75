"""CoIN objective on a micro Llama: pooled last real token, both terms reach the weights, the CLI config runs."""

import csv
from pathlib import Path

import torch

from ltune.cli import main
from ltune.datamodules import EmbeddedTasks, ParaphraseData
from ltune.forward import hidden_states
from ltune.objectives import CoIN
from tests.conftest import MICRO, micro_backbone

ROOT = Path(__file__).resolve().parents[2]


def _batch(model, n=8):
    dm = ParaphraseData(train=EmbeddedTasks(format="paraphrase", n=n), batch_size=4)
    dm.tokenizer = model.tokenizer
    dm.setup("fit")
    return dm.collate(dm.data["train"])


def test_contrastive_term_uses_the_last_real_token_and_reaches_the_weights():
    model = CoIN(backbone=micro_backbone(), contrastive_weight=0.0)
    model.configure_model()
    batch = _batch(model)
    gen_only, m0 = model.forward_loss(batch)
    model.contrastive_weight = 1000.0
    loss, m = model.forward_loss(batch)
    assert loss.item() > gen_only.item() and m["contrastive_loss"] <= m["generation_loss"] + 1e-6
    # the pooled states are those of each sequence alone (padding never reaches the last real token)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    k = int(mask[0].sum())
    alone = hidden_states(model.model, ids[:1, :k], mask[:1, :k])[0, -1]
    full = hidden_states(model.model, ids, mask)[0, k - 1]
    torch.testing.assert_close(alone, full, rtol=1e-4, atol=1e-5)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_config_runs_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/objectives/coin.yaml"),
            *MICRO,
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.train.init_args.n=32",
            "--data.init_args.val.init_args.n=8",
            "--data.init_args.eval_prompts.init_args.n=4",
            "--data.init_args.batch_size=4",
            "--data.init_args.eval_batch_size=4",
        ]
    )
    with open(tmp_path / "runs/coin/version_0/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("train/loss", "train/contrastive_loss", "train/hard_neg_cos", "val/retrieval_acc", "val/exact_match"):
        assert any(r.get(key) for r in rows), key
