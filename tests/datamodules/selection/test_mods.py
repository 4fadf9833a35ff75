"""MoDS: k-center greedy against a float64 brute-force loop, reward threshold + coverage by hand, the necessity
union, and the necessity round through the real CLI (seed M-step -> generate -> reward -> retrain on the union)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ltune.cli import main
from ltune.datamodules import EmbeddedTasks, InstructionData, MoDS
from ltune.datamodules.selection.geometry import k_center_greedy
from ltune.judges import VerifierJudge
from tests.conftest import ROOT, micro_backbone, write_jsonl
from tests.datamodules.selection.conftest import SHRINK


class LengthReward:
    """Reward = len(response) / 10 - 1: rows with responses longer than 10 characters are high quality."""

    def __init__(self, offset: float = 1.0) -> None:
        self.offset = offset

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        return torch.tensor([len(r) / 10 - self.offset for r in responses], dtype=torch.float64)


def brute_force_kcenter(x: np.ndarray, k: int, first: int | None, centers=()) -> list[int]:
    chosen, out = list(centers), []
    for i in range(k):
        if i == 0 and not chosen:
            nxt = first
        else:
            d = np.array([min(np.linalg.norm(x[p] - x[c]) for c in chosen) for p in range(len(x))])
            d[chosen] = -1
            nxt = int(d.argmax())
        chosen.append(nxt)
        out.append(nxt)
    return out


def test_k_center_greedy_equals_the_brute_force_loop():
    x = np.random.default_rng(0).normal(size=(80, 6))
    first = int(torch.randint(80, (1,), generator=torch.Generator().manual_seed(3)))
    got = k_center_greedy(torch.from_numpy(x), 12, seed=3).tolist()
    assert got == brute_force_kcenter(x, 12, first)
    got = k_center_greedy(torch.from_numpy(x).float(), 12, seed=3).tolist()  # float32 path: same choices here
    assert got == brute_force_kcenter(x, 12, first)
    ext = k_center_greedy(torch.from_numpy(x), 5, centers=torch.tensor([4, 9])).tolist()
    assert ext == brute_force_kcenter(x, 5, None, centers=[4, 9])


def test_k_center_greedy_by_hand():
    x = torch.tensor([[0.0], [1.0], [10.0], [4.0], [6.0]])
    # start at 0 (given as a centre): farthest is 10 (idx 2); then min distances 0:-,1:1,3:4,4:4 -> first max idx 3
    assert k_center_greedy(x, 2, centers=torch.tensor([0])).tolist() == [2, 3]


ROWS = [{"prompt": f"question {i}", "response": "y" * (5 + 3 * i)} for i in range(8)]  # lengths 5, 8, 11, ...


def make(tmp_path, **kwargs) -> MoDS:
    sel = MoDS(InstructionData(train=write_jsonl(tmp_path / "p.jsonl", ROWS)), reward=LengthReward(),
               embedder=micro_backbone(), cache_dir=str(tmp_path / "c"), report_dir=str(tmp_path / "r"),
               progress=False, **kwargs)  # fmt: skip
    sel.tokenizer = micro_backbone().tokenizer
    return sel


def test_quality_threshold_then_k_center_over_the_high_quality_rows(tmp_path):
    sel = make(tmp_path, budget=3, alpha=0.0)
    sel.select()
    np.testing.assert_allclose(sel.scores["reward"], [(5 + 3 * i) / 10 - 1 for i in range(8)])
    hq = np.flatnonzero(sel.scores["reward"] > 0.0)
    assert hq.tolist() == [2, 3, 4, 5, 6, 7]  # 11 characters and longer
    expect = hq[k_center_greedy(torch.from_numpy(sel.scores["embedding"][hq]), 3, seed=0).numpy()]
    assert sel.selected == expect.tolist() and set(sel.selected) <= set(hq.tolist())
    assert sorted(sel.necessity_candidates()) == sorted(set(hq.tolist()) - set(sel.selected))


def test_a_selection_that_keeps_nothing_says_which_cut_and_the_score_range(tmp_path):
    """Every reward is below alpha: one line naming the source, the cut, the scores' range and the report folder
    (it used to surface later as 'every row was skipped by the length policy')."""
    import pytest

    from ltune.datamodules import DataError

    sel = make(tmp_path, budget=3, alpha=5.0)
    with pytest.raises(DataError, match=r"p\.jsonl: MoDS kept none of 8 rows: none passed the cut on 'reward' "
                                        r"\(5\.0; scores from -0\.5 to 1\.6\)"):  # fmt: skip
        sel.select()


def test_necessary_rows_are_those_below_beta_added_to_the_seed_set(tmp_path):
    sel = make(tmp_path, budget=2, beta=0.5)
    sel.select()
    cands = sel.necessity_candidates()
    rewards = [0.1, 0.9, -2.0, 0.7][: len(cands)]
    rows = sel.with_necessary(cands, rewards)
    below = [c for c, r in zip(cands, rewards) if r < 0.5]
    assert rows == [ROWS[i] for i in [*sel.selected, *below]] and sel.necessary == below
    capped = make(tmp_path, budget=2, beta=0.5, augment_size=1)
    capped.select()
    assert len(capped.with_necessary(cands, rewards)) == 3


def test_necessity_round_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for a in SHRINK if "max_steps" not in a and "val_check" not in a]
    main(["fit", "--config", str(ROOT / "configs/selection/mods.yaml"), *args, "--data.init_args.budget=4",
          "--data.init_args.augment_size=3", "--data.init_args.beta=100.0", "--model.init_args.max_new_tokens=4",
          "--data.init_args.reward=tests.datamodules.selection.test_mods.LengthReward",
          "--data.init_args.reward.offset=3.0", "--trainer.callbacks.init_args.epochs_per_round=1"])  # fmt: skip
    run = tmp_path / "runs/mods/version_0"
    report = pd.read_csv(run / "selection/selection.csv")
    assert report["selected"].sum() == 4 and (report[report["selected"]]["reward"] > 0).all()
    round1 = [json.loads(x) for x in (run / "rounds/round_1/train.jsonl").read_text().splitlines()]
    produced = [json.loads(x) for x in (run / "rounds/round_1/chunk_00000.jsonl").read_text().splitlines()]
    assert len(produced) == (report["reward"] > 0).sum() - 4  # every other high-quality row was answered
    assert len(round1) == 4 + 3  # beta = 100 marks every answer as necessary; k-center keeps augment_size = 3
    history = json.loads((run / "rounds/rounds.json").read_text())
    assert [h["round"] for h in history] == [0, 1] and history[1]["rows"] == 7


def test_a_verifier_reward_keeps_only_the_clean_rows_of_the_embedded_pool(tmp_path):
    source = EmbeddedTasks(format="pool", n=120, split="train", difficulties=[1])
    rows = source.rows()
    sel = MoDS(InstructionData(train=source), reward=VerifierJudge(), budget=40, embedder=micro_backbone(),
               cache_dir=str(tmp_path / "c"), report_dir=str(tmp_path / "r"), progress=False)  # fmt: skip
    sel.tokenizer = micro_backbone().tokenizer
    sel.select()
    good = [r["quality"] == "good" for r in rows]
    assert sel.scores["reward"].tolist() == [1.0 if g else -1.0 for g in good]  # wrong or garbled: -1
    assert 0 < good.count(False) and len(sel.selected) == 40 and all(good[i] for i in sel.selected)
