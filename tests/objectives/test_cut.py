"""CUT objective on a micro Llama: the loss equals an independent full-softmax re-derivation of the released code's
computation, and configs/objectives/cut.yaml runs through the CLI."""

import csv
from pathlib import Path

import torch

from ltune.cli import main
from ltune.datamodules import EmbeddedTasks, JudgmentData
from ltune.objectives import CUT
from tests.conftest import MICRO, micro_backbone

ROOT = Path(__file__).resolve().parents[2]


def _batch(model, n=8):
    dm = JudgmentData(train=EmbeddedTasks(format="judgment", n=n))
    dm.tokenizer = model.tokenizer
    dm.setup("fit")
    return dm.collate(dm.data["train"])


def _code_style_loss(model, batch, threshold, weight):
    """The released code's steps (modeling_llama_unlikelihood.py), written independently on full probabilities:
    softmax(logits.float()), NLL mean over the first half, misalign mean over Misalign tokens, (MLE + UL) / 2."""
    ids, mask, labels, neg = batch["input_ids"], batch["attention_mask"], batch["labels"], batch["negative_rows"]
    b = ids.shape[0] - len(neg)
    probs = torch.softmax(model.model(ids, attention_mask=mask).logits.float(), -1)[:, :-1]
    tgt = labels[:, 1:]
    valid = tgt != -100
    p_tok = probs.gather(-1, tgt.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    mle = -torch.log(p_tok[:b][valid[:b]]).mean()
    p_judged = p_tok[:b][torch.tensor(neg)][valid[:b][torch.tensor(neg)]]
    p_mis = p_tok[b:][valid[b:]]
    flagged = (p_judged / p_mis).detach() > threshold
    terms = torch.where(flagged, weight * -torch.log(1 - p_mis), -torch.log(p_mis))
    return (mle + terms.mean()) / 2


def test_loss_matches_the_released_code_computation():
    model = CUT(backbone=micro_backbone(), threshold=1.0, weighting="constant", alpha=0.5)
    model.configure_model()
    batch = _batch(model)
    assert batch["negative_rows"]
    ours, metrics = model.forward_loss(batch)
    theirs = _code_style_loss(model, batch, threshold=1.0, weight=0.5)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert 0 < metrics["ul_token_frac"] < 1


def test_config_runs_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/objectives/cut.yaml"),
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
    with open(tmp_path / "runs/cut/version_0/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("train/loss", "train/ul_token_frac", "train/ratio_mean", "val/misalign_loss", "val/exact_match"):
        assert any(r.get(key) for r in rows), key
