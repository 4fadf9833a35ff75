"""ORPO objective on a micro Llama: same loss and gradients as TRL's ORPO computation from full logits, learning
from preference pairs, and a run of configs/objectives/orpo.yaml through the real CLI."""

import csv
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.nn import functional as F

from ltune.cli import main
from ltune.datamodules import EmbeddedTasks, PreferenceData
from ltune.objectives import ORPO
from tests.conftest import MICRO, micro_backbone

ROOT = Path(__file__).resolve().parents[2]


def _batch(model, n=4, **kw):
    dm = PreferenceData(train=EmbeddedTasks(format="preference", n=n), **kw)
    dm.tokenizer = model.tokenizer
    dm.setup("fit")
    return dm.collate(dm.data["train"])


def _trl_loss(model, batch, beta, nll_on_prompt=True):
    """TRL's ORPO loss (trl.experimental.orpo) from the full logits: get_batch_logps + CE + odds_ratio_loss."""
    pytest.importorskip("trl")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from types import SimpleNamespace

    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    n = ids.shape[0] // 2
    logits = model.model(ids, attention_mask=mask, use_cache=False).logits
    logps = ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    nll_labels = torch.where(mask == 1, ids, -100) if nll_on_prompt else labels
    nll = F.cross_entropy(logits[:n, :-1].reshape(-1, logits.shape[-1]), nll_labels[:n, 1:].reshape(-1))
    fake = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device=torch.device("cpu")))
    losses, *_ = ORPOTrainer.odds_ratio_loss(fake, logps[:n], logps[n:])
    return nll - losses.mean(), logps


@pytest.mark.parametrize("nll_on_prompt", [True, False])
def test_loss_and_gradients_match_trl_from_full_logits(nll_on_prompt):
    model = ORPO(backbone=micro_backbone(), beta=0.25, nll_on_prompt=nll_on_prompt)
    model.configure_model()
    batch = _batch(model, n=5)
    ours, metrics = model.forward_loss(batch)
    ours.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    theirs, logps = _trl_loss(model, batch, beta=0.25, nll_on_prompt=nll_on_prompt)
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["logps/chosen"], logps[:5].mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["logps/rejected"], logps[5:].mean(), rtol=1e-5, atol=1e-6)
    for k, p in model.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)


def test_learns_to_prefer_the_chosen_responses_and_weights_change():
    model = ORPO(backbone=micro_backbone(), beta=1.0, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    rows = EmbeddedTasks(format="preference", n=8, categories=["compare"])
    dm = PreferenceData(train=rows, val=rows, batch_size=8)  # fit 8 pairs, measured on the same pairs
    kw = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    kw.update(enable_model_summary=False, num_sanity_val_steps=0)
    keys = ("loss", "log_odds_chosen", "rewards/accuracies")
    trainer = L.Trainer(**kw)
    trainer.validate(model, datamodule=dm, verbose=False)
    before = {k: trainer.callback_metrics[f"val/{k}"].item() for k in keys}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = L.Trainer(max_steps=30, **kw)
    trainer.fit(model, dm)
    trainer.validate(model, datamodule=dm, verbose=False)
    after = {k: trainer.callback_metrics[f"val/{k}"].item() for k in keys}
    assert after["loss"] < before["loss"] and after["log_odds_chosen"] > before["log_odds_chosen"] + 0.1
    assert after["rewards/accuracies"] >= 0.75 > before["rewards/accuracies"]
    assert all(not torch.equal(p, weights[n]) for n, p in model.named_parameters())


def test_config_runs_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/objectives/orpo.yaml"),
            *MICRO,
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.train.init_args.n=32",
            "--data.init_args.val.init_args.n=8",
            "--data.init_args.eval_prompts.init_args.n=4",
            "--data.init_args.batch_size=4",
        ]
    )
    assert "val/rewards/accuracies" in capsys.readouterr().out  # printed by validate_around_fit
    with open(tmp_path / "runs/orpo/version_0/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("train/loss", "train/nll_loss", "train/log_odds_ratio", "train/rewards/margins", "val/exact_match"):
        assert any(r.get(key) for r in rows), key
