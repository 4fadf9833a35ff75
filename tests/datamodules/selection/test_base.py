"""Selection base: budget semantics, score cache (reuse, invalidation, atomic), report, row-naming errors,
DDP sharding (two gloo processes), Subset nesting."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ltune.datamodules import EmbeddedTasks, InstructionData
from ltune.datamodules.selection import ScoreCache, ScoringError, Selection, Subset, resolve_budget
from ltune.datamodules.selection.base import pair_text
from ltune.datamodules.selection.cache import config_key, fingerprint
from tests.conftest import write_jsonl


class LengthScore(Selection):
    """Score = response length in characters; keep the longest (a scorer whose result is known by hand)."""

    calls = 0

    def __init__(self, *args, fail_on: str | None = None, factor: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_on, self.factor = fail_on, factor

    def scorer_config(self):
        return {**super().scorer_config(), "factor": self.factor}

    def score(self, rows, names):
        LengthScore.calls += 1
        lengths = [len(pair_text(r)[1]) for r in rows]

        def fn(batch):
            if any(self.fail_on and self.fail_on in rows[i]["response"] for i in batch):
                raise ValueError("boom")
            return {"length": np.array([float(lengths[i] * self.factor) for i in batch])}

        return self.batched(len(rows), lengths, fn, names, desc="length")

    def choose(self, scores, k):
        return np.argsort(-scores["length"], kind="stable")[:k]


ROWS = [{"prompt": f"q{i}", "response": "x" * (i % 7 + 1) + f" {i}"} for i in range(20)]


def make(tmp_path, rows=ROWS, tokenizer=None, **kwargs):
    path = str(tmp_path / "pool.jsonl")
    if rows is not None:  # None: the pool is already written (DDP ranks must not rewrite it under each other)
        write_jsonl(path, rows)
    sel = LengthScore(
        InstructionData(train=path),
        cache_dir=str(tmp_path / "cache"),
        report_dir=str(tmp_path / "report"),
        score_batch_size=3,
        progress=False,
        **kwargs,
    )
    sel.tokenizer = tokenizer
    return sel


def test_budget_is_a_count_or_a_fraction_of_the_original_pool():
    assert resolve_budget(7, 100) == 7 and resolve_budget(500, 100) == 100
    assert resolve_budget(0.1, 1000) == 100 and resolve_budget(1.0, 37) == 37 and resolve_budget(0.01, 10) == 1
    for bad in (0, 0.0, 1.5, -3, True):
        with pytest.raises(ValueError):
            resolve_budget(bad, 10)


def test_selects_by_score_sets_train_rows_and_writes_report(tmp_path, tokenizer):
    sel = make(tmp_path, tokenizer=tokenizer, budget=0.25)
    kept = sel.select()
    lengths = [len(r["response"]) for r in ROWS]
    expect = sorted(range(20), key=lambda i: -lengths[i])[:5]  # stable: ties keep pool order
    assert sel.selected == expect and kept == [ROWS[i] for i in expect]
    assert len(sel.pool.data["train"]) == 5
    import pandas as pd

    df = pd.read_csv(tmp_path / "report/selection.csv")
    assert list(df.columns) == ["index", "length", "selected"]
    assert df["length"].tolist() == lengths and df.index[df["selected"]].tolist() == sorted(expect)
    assert (tmp_path / "report/selection.png").stat().st_size > 1000
    import json

    cost = json.loads((tmp_path / "report/scoring.json").read_text())  # the scoring cost, for reports
    assert cost["rows"] == 20 and cost["scored"] == 20 and cost["seconds"] >= 0 and cost["rows_per_s"] > 0
    sel = make(tmp_path, tokenizer=tokenizer, budget=0.5)  # the same scores, read from the cache: no rate
    sel.select()
    cost = json.loads((tmp_path / "report/scoring.json").read_text())
    assert cost["rows"] == 20 and cost["scored"] == 0 and cost["rows_per_s"] is None


def test_cache_is_reused_and_invalidated_by_data_or_config(tmp_path, tokenizer):
    LengthScore.calls = 0
    make(tmp_path, tokenizer=tokenizer, budget=3).select()
    assert LengthScore.calls == 1 and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    make(tmp_path, tokenizer=tokenizer, budget=5).select()  # another budget: same scores, read from the cache
    assert LengthScore.calls == 1
    make(tmp_path, tokenizer=tokenizer, budget=3, factor=2).select()  # scorer config changed
    assert LengthScore.calls == 2
    changed = [dict(r) for r in ROWS]
    changed[4]["response"] = "changed"
    sel = make(tmp_path, rows=changed, tokenizer=tokenizer, budget=3)
    sel.select()  # one row changed
    assert LengthScore.calls == 3 and sel.scores["length"][4] == len("changed")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    assert not list((tmp_path / "cache").glob("*.tmp"))  # nothing half-written left behind


def test_cache_key_depends_on_rows_order_and_config():
    a, b = [{"x": 1}, {"x": 2}], [{"x": 2}, {"x": 1}]
    assert fingerprint(a) != fingerprint(b) and fingerprint(a) == fingerprint([{"x": 1}, {"x": 2}])
    assert config_key(fingerprint(a), {"t": "chat"}) != config_key(fingerprint(a), {"t": "plain"})


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    cache = ScoreCache(tmp_path)
    cache.save("k", {"s": np.arange(3.0)})

    class Unsaveable:
        def __array__(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.save("k", {"s": Unsaveable()})
    np.testing.assert_array_equal(cache.load("k")["s"], np.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npz"]


def test_a_failing_row_raises_an_error_naming_it(tmp_path, tokenizer):
    sel = make(tmp_path, tokenizer=tokenizer, budget=3, fail_on=" 13")
    with pytest.raises(ScoringError, match=r"pool.jsonl: row 14: scoring failed"):
        sel.select()
    assert not list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_a_non_finite_score_is_an_error_not_a_default(tmp_path, tokenizer):
    class NaNScore(LengthScore):
        def score(self, rows, names):
            out = super().score(rows, names)
            out["length"][6] = np.nan
            return out

    sel = NaNScore(
        InstructionData(train=write_jsonl(tmp_path / "p.jsonl", ROWS)),
        cache_dir=str(tmp_path / "c"),
        report_dir=str(tmp_path / "r"),
        progress=False,
    )
    sel.tokenizer = tokenizer
    with pytest.raises(ScoringError, match=r"p.jsonl: row 7: score 'length' is nan"):
        sel.select()


def test_subset_is_seeded_and_nested_across_budgets(tmp_path, tokenizer):
    pool = EmbeddedTasks(format="pool", n=50, seed=1)

    def pick(budget, seed):
        s = Subset(InstructionData(train=pool), budget=budget, seed=seed, report_dir=str(tmp_path / "r"))
        s.tokenizer = tokenizer
        s.select()
        return s.selected

    small, mid, full = pick(0.1, 0), pick(0.5, 0), pick(1.0, 0)
    assert len(small) == 5 and len(mid) == 25 and sorted(full) == list(range(50))
    assert mid[:5] == small and full[:25] == mid  # nested prefixes of one permutation
    assert pick(0.5, 0) == mid and pick(0.5, 1) != mid
    assert small == np.random.default_rng(0).permutation(50)[:5].tolist()


def _ddp_worker(rank, world, port, tmp, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from ltune.backbone import Backbone

    sel = make(__import__("pathlib").Path(tmp), rows=None, tokenizer=Backbone().tokenizer, budget=4)
    seen = []
    orig = sel.score

    def spy(rows, names):
        seen.extend(names)
        return orig(rows, names)

    sel.score = spy
    sel.select()
    torch.save({"seen": seen, "length": sel.scores["length"], "selected": sel.selected}, f"{out}/{rank}.pt")
    torch.distributed.destroy_process_group()


def test_scoring_shards_across_ddp_ranks(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_jsonl(tmp_path / "pool.jsonl", ROWS)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["seen"] == [f"{tmp_path}/pool.jsonl: row {i + 1}" for i in range(0, 20, 2)]
    assert r1["seen"] == [f"{tmp_path}/pool.jsonl: row {i + 1}" for i in range(1, 20, 2)]
    lengths = np.array([len(r["response"]) for r in ROWS], dtype=float)
    np.testing.assert_array_equal(r0["length"], lengths)
    np.testing.assert_array_equal(r1["length"], lengths)
    assert r0["selected"] == r1["selected"] == sorted(range(20), key=lambda i: -lengths[i])[:4]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_scaling_study_fits_per_budget_and_plots_per_category(tmp_path, monkeypatch):
    import pandas as pd

    from ltune.cli import main
    from tests.conftest import ROOT
    from tests.datamodules.selection.conftest import SHRINK

    monkeypatch.chdir(tmp_path)
    main(["scaling", "--config", str(ROOT / "configs/selection/scaling.yaml"), *SHRINK, "--budgets", "0.25,1.0",
          "--output", "study", "--data.init_args.pool.init_args.eval_prompts.init_args.n=12"])  # fmt: skip
    df = pd.read_csv(tmp_path / "study/scaling.csv")
    assert sorted(set(df["rows"])) == [15, 60] and set(df["budget"]) == {0.25, 1.0}
    cats = set(df["category"])
    assert "all" in cats and len(cats) >= 3  # the overall metric and one line per category in the eval prompts
    assert df["exact_match"].between(0, 1).all()
    assert (tmp_path / "study/scaling.png").stat().st_size > 1000


def test_scaling_csv_holds_one_row_per_budget_and_category_on_uncategorised_rows(tmp_path, monkeypatch):
    """A user's evaluation rows name no category: one row per budget (the overall exact match), not two."""
    import json

    import pandas as pd

    from ltune.cli import main
    from tests.conftest import ROOT
    from tests.datamodules.selection.conftest import SHRINK

    monkeypatch.chdir(tmp_path)
    rows = [{"prompt": f"{a}+{a}=?", "answer": str(2 * a)} for a in range(6)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["scaling", "--config", str(ROOT / "configs/selection/scaling.yaml"), *SHRINK, "--budgets", "0.5,1.0",
          "--output", "study", "--data.init_args.pool.init_args.eval_prompts=eval.jsonl"])  # fmt: skip
    df = pd.read_csv(tmp_path / "study/scaling.csv")
    assert list(df["category"]) == ["all", "all"] and list(df["budget"]) == [0.5, 1.0], df


def test_report_is_logged_to_wandb_when_a_wandb_logger_is_attached(tmp_path, tokenizer):
    from types import SimpleNamespace

    from lightning.pytorch.loggers import WandbLogger

    class Recorder(WandbLogger):
        def __init__(self):
            self.calls = []

        def log_table(self, key, dataframe=None, **kwargs):
            self.calls.append((key, len(dataframe)))

        def log_image(self, key, images, **kwargs):
            self.calls.append((key, images[0]))

    rec = Recorder()
    sel = make(tmp_path, tokenizer=tokenizer, budget=3)
    sel.trainer = SimpleNamespace(loggers=[rec], log_dir=None)
    sel.select()
    assert rec.calls == [("selection/scores", 20), ("selection/histogram", str(tmp_path / "report/selection.png"))]
