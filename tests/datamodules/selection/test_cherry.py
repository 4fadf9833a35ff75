"""Cherry's pre-experienced stage as rounds (callbacks.CherryPreExperience): the E-step's IFD is the one of the
model in training (against an unbatched float64 reference), the next round's rows are the top budget of IFD < 1, and
the whole loop runs through the real CLI (pre-experience M-step -> IFD E-step -> base model on the kept rows)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ltune import SFT
from ltune.callbacks.cherry_rounds import CherryPreExperience
from ltune.cli import main
from ltune.datamodules import EmbeddedTasks, IFDPreExperience, InstructionData
from tests.conftest import ROOT, micro_backbone, write_jsonl
from tests.datamodules.selection.conftest import ROWS, SHRINK, reference_nll


def pre_experience(tmp_path, rows) -> IFDPreExperience:
    dm = IFDPreExperience(InstructionData(train=write_jsonl(tmp_path / "pool.jsonl", rows), max_length=128),
                          clusters=2, per_cluster=1, cache_dir=str(tmp_path / "cache"),
                          report_dir=str(tmp_path / "pre"), score_batch_size=2, progress=False)  # fmt: skip
    dm.backbone = micro_backbone()
    dm.tokenizer = dm.backbone.tokenizer
    dm.select()
    return dm


def test_e_step_scores_ifd_with_the_model_in_training(tmp_path):
    rows = [*ROWS, {"prompt": "x" * 150, "response": "an over-long prompt"}]
    dm = pre_experience(tmp_path, rows)
    sft = SFT(backbone=micro_backbone())
    sft.configure_model()
    with torch.no_grad():  # weights that are not the base model's: the E-step must score these
        g = torch.Generator().manual_seed(1)
        for p in sft.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    sft.model.train()
    trainer = SimpleNamespace(datamodule=dm, is_global_zero=True)
    cb = CherryPreExperience(budget=3, score_batch_size=2)
    produced = cb.e_step(trainer, sft, 1, cb.e_step_items(trainer, sft, 1))
    assert sft.model.training  # the training mode is restored after scoring
    assert [p["index"] for p in produced] == list(range(6)) and [p["skipped"] for p in produced] == [False] * 5 + [True]
    model, tok = sft.model.eval(), sft.tokenizer
    for p, row in zip(produced[:5], rows):
        cond = reference_nll(model, tok, f"Q: {row['prompt']}\nA: ", row["response"])  # tiny chat template
        direct = reference_nll(model, tok, [tok.eos_token_id], row["response"])  # the answer alone after EOS
        assert p["loss_cond"] == pytest.approx(cond, rel=1e-5) and p["loss_direct"] == pytest.approx(direct, rel=1e-5)
        assert p["ifd"] == pytest.approx(cond / direct, rel=1e-5)
    assert produced[5]["ifd"] is None and produced[5]["loss_cond"] is None


def test_next_rows_are_the_top_budget_below_ifd_one(tmp_path):
    rows = [*ROWS, {"prompt": "x" * 150, "response": "an over-long prompt"}]
    dm = pre_experience(tmp_path, rows)
    trainer = SimpleNamespace(datamodule=dm, is_global_zero=True)
    ifd = [0.5, 1.0, 0.9, 1.3, 0.7, None]  # 1.0 and 1.3 are dropped (IFD >= 1), the last row was skipped
    produced = [{"index": i, "skipped": v is None, "ifd": v, "loss_cond": v and 2 * v, "loss_direct": v and 2.0}
                for i, v in enumerate(ifd)]  # fmt: skip
    for budget, top in ((2, [2, 4]), (10, [2, 4, 0]), (0.5, [2, 4, 0])):  # 0.5 of the original 6 rows: 3
        cb = CherryPreExperience(budget=budget)
        cb.dir = tmp_path / f"rounds{budget}"
        assert cb.train_rows(trainer, None, 1, produced) == [dm.rows[i] for i in top] and cb.selected == top
        report = pd.read_csv(cb.dir / "round_1/selection/selection.csv")
        assert report["selected"].tolist() == [i in top for i in range(6)]
        assert report["skipped"].tolist() == [False] * 5 + [True]
        figures = cb.round_metrics(1, produced, [dm.rows[i] for i in top])
        assert figures["rows"] == len(top) and figures["ifd_below_1"] == 3 and figures["skipped"] == 1
        assert figures["mean_ifd_kept"] == pytest.approx(np.mean([ifd[i] for i in top]))


def test_needs_a_selection_datamodule(tmp_path):
    trainer = SimpleNamespace(datamodule=InstructionData(train=write_jsonl(tmp_path / "p.jsonl", ROWS)))
    with pytest.raises(TypeError, match="IFDPreExperience"):
        CherryPreExperience().setup(trainer, None, "fit")
    with pytest.raises(ValueError, match="ratio"):
        CherryPreExperience(ratio="log")


def test_cherry_config_runs_both_stages_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for a in SHRINK if "max_steps" not in a and "val_check" not in a]
    main(["fit", "--config", str(ROOT / "configs/selection/cherry.yaml"), *args, "--data.init_args.clusters=4",
          "--data.init_args.per_cluster=3"])  # fmt: skip
    run = tmp_path / "runs/cherry/version_0"
    pre = pd.read_csv(run / "selection/selection.csv")
    assert len(pre) == 60 and 4 <= pre["selected"].sum() <= 12  # at most 3 rows from each of 4 clusters
    produced = [json.loads(x) for f in sorted((run / "rounds/round_1").glob("chunk_*.jsonl"))
                for x in f.read_text().splitlines()]  # fmt: skip
    assert [p["index"] for p in produced] == list(range(60))  # every pool row was scored
    ifd = np.array([np.nan if p["ifd"] is None else p["ifd"] for p in produced])
    eligible = np.flatnonzero(ifd < 1.0)
    top = eligible[np.argsort(-ifd[eligible], kind="stable")][:6].tolist()  # budget 0.1 of 60 rows
    pool = EmbeddedTasks(format="pool", n=60, split="train").rows()
    round1 = [json.loads(x) for x in (run / "rounds/round_1/train.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in round1] == [pool[i]["prompt"] for i in top] and len(round1) >= 1
    assert pd.read_csv(run / "rounds/round_1/selection/selection.csv")["selected"].sum() == len(round1)
    history = json.loads((run / "rounds/rounds.json").read_text())
    assert [h["round"] for h in history] == [0, 1] and history[1]["rows"] == len(round1)
    assert history[1]["scored"] + history[1]["skipped"] == 60
    metrics = pd.read_csv(run / "metrics.csv")
    assert set(metrics.loc[metrics["train/loss"].notna(), "epoch"]) == {0, 1}  # one M-step per round
