"""LIMA: the quality rules and k-center coverage by hand, residual dropout rates and where they apply, and the recipe
through the real CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ltune.callbacks.residual_dropout import ResidualDropout, residual_dropout_rates
from ltune.cli import main
from ltune.datamodules import LIMA, InstructionData
from ltune.datamodules.selection.geometry import k_center_greedy
from tests.conftest import ROOT, micro_backbone, write_jsonl
from tests.datamodules.selection.conftest import SHRINK


def test_residual_dropout_rises_linearly_over_the_layers():
    assert residual_dropout_rates(4, 0.3) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert residual_dropout_rates(1, 0.2) == [0.2]


def test_residual_dropout_applies_to_sublayer_outputs_in_training_only():
    model = micro_backbone().load_model()
    cb = ResidualDropout(p_max=0.5)
    cb.attach(model)
    seen = {}
    layers = model.get_decoder().layers
    for i, layer in enumerate(layers):  # registered after the dropout hooks: sees their output
        layer.mlp.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out.detach()))
    ids = torch.randint(3, 300, (4, 64))
    model.train()
    model(ids)
    assert (seen[0] == 0).float().mean() < 0.01  # layer 0: p = 0
    assert 0.4 < (seen[1] == 0).float().mean() < 0.6  # top layer: p = 0.5
    model.eval()
    with torch.no_grad():
        hooked = model(ids).logits
        cb.detach()
        plain = model(ids).logits
    torch.testing.assert_close(hooked, plain)


def test_quality_rules_then_k_center_coverage(tmp_path):
    rows = [
        {"prompt": "a", "response": "x" * 30},
        {"prompt": "b", "response": "too short"},
        {"prompt": "c", "response": "In my view " + "y" * 30},  # first person
        {"prompt": "d", "response": "z" * 50},
        {"prompt": "e", "response": "As mentioned in the other answer, " + "w" * 20},
        {"prompt": "f", "response": "v" * 200},  # too long
        {"prompt": "g", "response": "u" * 40},
    ]
    sel = LIMA(InstructionData(train=write_jsonl(tmp_path / "p.jsonl", rows)), budget=2, min_chars=20, max_chars=100,
               embedder=micro_backbone(), cache_dir=str(tmp_path / "c"), report_dir=str(tmp_path / "r"),
               progress=False)  # fmt: skip
    sel.tokenizer = micro_backbone().tokenizer
    sel.select()
    ok = sel.quality(sel.scores)
    assert ok.tolist() == [0, 3, 6]
    expect = ok[k_center_greedy(torch.from_numpy(sel.scores["embedding"][ok]), 2, seed=0).numpy()]
    assert sel.selected == expect.tolist()


def test_lima_recipe_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for a in SHRINK if "max_steps" not in a and "val_check" not in a]
    main(["fit", "--config", str(ROOT / "configs/recipes/lima.yaml"), *args, "--trainer.max_epochs=1",
          "--data.init_args.budget=6", "--data.init_args.embedder.name_or_path=tiny"])  # fmt: skip
    run = tmp_path / "runs/lima/version_0"
    report = pd.read_csv(run / "selection/selection.csv")
    assert report["selected"].sum() == 6 and (report[report["selected"]]["response_chars"] >= 20).all()
    assert len(list((run / "checkpoints").glob("*.ckpt"))) == 1
    lrs = pd.read_csv(run / "metrics.csv")
    assert np.isfinite(lrs["train/loss"].dropna()).all()


def test_changed_reject_patterns_are_not_served_stale_from_the_cache(tmp_path):
    """The patterns decide the cached flags, so they are part of the cache key (a changed pattern re-scores)."""
    rows = [{"prompt": "a", "response": "I think " + "x" * 30}, {"prompt": "b", "response": "y" * 30}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)

    def lima(patterns):
        sel = LIMA(InstructionData(train=path), budget=2, min_chars=20, reject_patterns=patterns,
                   cache_dir=str(tmp_path / "c"), report_dir=str(tmp_path / "r"), progress=False)  # fmt: skip
        sel.tokenizer = micro_backbone().tokenizer
        sel.select()
        return sel.selected

    assert lima(None) == [1]  # the default patterns reject the first-person row
    assert sorted(lima([r"nothing matches this"])) == [0, 1]
    assert lima(None) == [1]
