"""Shared fixtures: offline, no W&B, tiny models only."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tiny models gain nothing from intra-op threads, and spinning OpenMP threads starve parallel test processes
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from ltune.backbone import Backbone, Tiny  # noqa: E402


def micro_backbone(**kwargs) -> Backbone:
    """A smaller-than-tiny Llama for fast unit tests."""
    tiny = Tiny(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, max_positions=256)
    return Backbone(name_or_path="tiny", tiny=tiny, **kwargs)


@pytest.fixture
def backbone() -> Backbone:
    return micro_backbone()


@pytest.fixture
def tokenizer(backbone):
    return backbone.tokenizer


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from torch seed 0 and no run seed (``seed_everything`` of an earlier test is forgotten)."""
    torch.manual_seed(0)
    os.environ.pop("PL_GLOBAL_SEED", None)
    yield
    os.environ.pop("PL_GLOBAL_SEED", None)


def trained_runs(tok, ex: dict) -> list[str]:
    """The decoded runs of consecutive trained tokens (labels other than -100) of one encoded row."""
    runs, run = [], []
    for t, lab in zip(ex["input_ids"], ex["labels"]):
        if lab != -100:
            run.append(t)
        elif run:
            runs, run = [*runs, tok.decode(run)], []
    return runs + ([tok.decode(run)] if run else [])


def write_jsonl(path, rows) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


ROOT = Path(__file__).resolve().parents[1]
MICRO = [  # shrink the tiny preset so a CLI run takes seconds
    "--model.init_args.backbone.tiny.hidden_size=32",
    "--model.init_args.backbone.tiny.num_layers=2",
    "--model.init_args.backbone.tiny.num_heads=2",
    "--model.init_args.backbone.tiny.num_kv_heads=1",
    "--model.init_args.backbone.tiny.intermediate_size=64",
]


def cpu_env() -> dict[str, str]:
    """Environment of CLI subprocesses: offline, one thread (2 shared cores oversubscribe badly), repo importable."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "disabled"}  # fmt: skip


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's ``metrics.csv`` (CSVLogger)."""
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def quiet_trainer(**kwargs):
    """A CPU ``Trainer`` without loggers, checkpoints, progress bars, summary or sanity validation (unit tests)."""
    import lightning as L

    defaults = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


def fit_side_by_side(tmp_path: Path, runs: dict[str, list[str]]) -> tuple[Path, ...]:
    """``ltune fit`` with each entry's arguments, all at the same time, each in its own folder ``tmp_path / name``;
    returns their run folders in order. A run that fails shows the end of its stderr."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    jobs = []
    for name, args in runs.items():
        (tmp_path / name).mkdir()
        cmd = [sys.executable, "-m", "ltune.cli", "fit", *args]
        jobs.append(
            subprocess.Popen(cmd, cwd=tmp_path / name, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, err.decode()[-4000:]
    return tuple(next((tmp_path / name / "runs").glob("*/version_0")) for name in runs)
