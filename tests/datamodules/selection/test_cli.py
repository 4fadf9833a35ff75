"""Selection configs through the real CLI: `ltune fit` trains on the kept rows, `ltune select` writes them (the
second run reads the scores from the cache the first wrote). orpo_deita / dpo_deita compose DEITA with ORPO / DPO
(DPO's reference log-probs precomputed over the kept pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ltune.cli import main
from tests.conftest import ROOT
from tests.datamodules.selection.conftest import SHRINK

EXTRA = {
    "deita": ["--data.init_args.budget=6"],
    "orpo_deita": ["--data.init_args.budget=6", "--data.init_args.pool.init_args.val.init_args.n=4"],
    "dpo_deita": ["--data.init_args.budget=6", "--data.init_args.pool.init_args.val.init_args.n=4"],
}
COLUMNS = {"orpo_deita": {"prompt", "chosen", "rejected"}, "dpo_deita": {"prompt", "chosen", "rejected"}}


@pytest.mark.parametrize("name", ["ifd", "superfiltering", "random", "deita", "orpo_deita", "dpo_deita"])
def test_selection_configs_fit_and_select(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, args = str(ROOT / f"configs/selection/{name}.yaml"), [*SHRINK, *EXTRA.get(name, [])]
    main(["fit", "--config", config, *args])
    report = pd.read_csv(tmp_path / f"runs/{name}/version_0/selection/selection.csv")
    assert len(report) == 60 and 1 <= report["selected"].sum() <= 6  # budget: 0.1 of 60, or 6 rows
    assert (tmp_path / f"runs/{name}/version_0/selection/selection.png").is_file()
    metrics = pd.read_csv(tmp_path / f"runs/{name}/version_0/metrics.csv")
    assert metrics["train/loss"].notna().sum() >= 1  # trained on the kept rows
    main(["select", "--config", config, *args, "--output", "kept.jsonl"])
    rows = [json.loads(line) for line in Path("kept.jsonl").read_text().splitlines()]
    assert len(rows) == report["selected"].sum()
    want = COLUMNS.get(name, {"prompt", "response", "quality", "duplicate", "difficulty"})
    assert want <= set(rows[0])  # the source rows as they were, not the mapped fields
    if name != "random":
        assert len(list((tmp_path / "runs/selection_cache").glob("*.npz"))) == 1
    if name == "dpo_deita":  # the reference cache holds the kept train pairs and the val pairs
        (cache,) = (tmp_path / "runs/reference_cache").glob("*.json")
        assert len(json.loads(cache.read_text())["pairs"]) == report["selected"].sum() + 4
