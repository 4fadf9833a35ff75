"""IFD (Cherry) and Superfiltering: losses against an unbatched float64 reference built from raw strings, the
ratio formulas, the IFD >= 1 and over-long filters, the budget, and scoring with a separate small model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ltune.datamodules import IFD, InstructionData, PreferenceData
from ltune.datamodules.selection.scoring import SKIPPED
from tests.conftest import micro_backbone, write_jsonl
from tests.datamodules.selection.conftest import ROWS, reference_nll


def ifd(tmp_path, rows=ROWS, pool_cls=InstructionData, **kwargs) -> IFD:
    tmp_path.mkdir(parents=True, exist_ok=True)
    sel = IFD(pool_cls(train=write_jsonl(tmp_path / "pool.jsonl", rows), max_length=128),
              cache_dir=str(tmp_path / "cache"), report_dir=str(tmp_path / "report"), score_batch_size=2,
              progress=False, **kwargs)  # fmt: skip
    sel.backbone = micro_backbone()
    sel.tokenizer = sel.backbone.tokenizer
    return sel


def test_losses_match_an_unbatched_float64_reference_and_ifd_is_their_ratio(tmp_path):
    sel = ifd(tmp_path, budget=5)
    sel.select()
    s = sel.scores
    bb = micro_backbone()
    model, tok = bb.load_model().eval(), bb.tokenizer
    for i, row in enumerate(ROWS):
        cond = reference_nll(model, tok, f"Q: {row['prompt']}\nA: ", row["response"])  # tiny chat template
        direct = reference_nll(model, tok, [tok.eos_token_id], row["response"])  # answer alone after EOS
        assert s["loss_cond"][i] == pytest.approx(cond, rel=1e-5)
        assert s["loss_direct"][i] == pytest.approx(direct, rel=1e-5)
        assert s["ifd"][i] == pytest.approx(cond / direct, rel=1e-5)


def test_selection_drops_ifd_at_or_above_one_and_keeps_the_top_budget(tmp_path):
    sel = ifd(tmp_path, budget=2)
    scores = {"ifd": np.array([0.5, 1.0, 0.9, 1.3, 0.7, 0.95]), SKIPPED: np.array([0, 0, 0, 0, 0, 1], dtype=bool)}
    assert sel.choose(scores, 2).tolist() == [2, 4]  # 1.0 and 1.3 dropped, 0.95 skipped (over-long)
    assert sel.choose(scores, 10).tolist() == [2, 4, 0]  # fewer eligible rows than the budget


def test_overlong_rows_are_skipped_and_counted_not_scored(tmp_path):
    rows = [*ROWS, {"prompt": "x" * 150, "response": "long prompt"}]
    sel = ifd(tmp_path, rows=rows, budget=6)
    sel.select()
    assert sel.scores[SKIPPED].tolist() == [False] * 5 + [True]
    assert math.isnan(sel.scores["ifd"][5]) and 5 not in sel.selected


def test_ppl_ratio_is_exp_of_the_loss_difference(tmp_path):
    a, b = ifd(tmp_path / "a", budget=5), ifd(tmp_path / "b", budget=5, ratio="ppl")
    a.select(), b.select()
    np.testing.assert_allclose(b.scores["ifd"], np.exp(a.scores["loss_cond"] - a.scores["loss_direct"]), rtol=1e-9)
    np.testing.assert_allclose(b.scores["loss_cond"], a.scores["loss_cond"])


def test_superfiltering_scores_with_a_different_small_model(tmp_path):
    small = micro_backbone()
    small.tiny.hidden_size, small.tiny.init_seed = 16, 3
    sup = ifd(tmp_path, budget=3, scorer=small)
    base = ifd(tmp_path, budget=3)
    sup.select(), base.select()
    assert not np.allclose(sup.scores["loss_cond"], base.scores["loss_cond"])  # a different model scored them
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # the scorer model is part of the cache key
    model = small.load_model().eval()
    ref = reference_nll(model, small.tokenizer, f"Q: {ROWS[0]['prompt']}\nA: ", ROWS[0]["response"])
    assert sup.scores["loss_cond"][0] == pytest.approx(ref, rel=1e-5)


def test_preference_rows_are_scored_on_prompt_and_chosen(tmp_path):
    pref = [{"prompt": r["prompt"], "chosen": r["response"], "rejected": "no"} for r in ROWS]
    a, b = ifd(tmp_path / "a", budget=5), ifd(tmp_path / "b", rows=pref, pool_cls=PreferenceData, budget=5)
    a.select(), b.select()
    np.testing.assert_allclose(b.scores["ifd"], a.scores["ifd"], rtol=1e-6)


def test_direct_prefix_replaces_the_start_token(tmp_path):
    sel = ifd(tmp_path, budget=5, direct_prefix="### Response:")
    sel.select()
    bb = micro_backbone()
    ref = reference_nll(bb.load_model().eval(), bb.tokenizer, "### Response:", ROWS[1]["response"])
    assert sel.scores["loss_direct"][1] == pytest.approx(ref, rel=1e-5)
