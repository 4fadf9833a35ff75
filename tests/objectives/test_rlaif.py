"""RLAIF in order on micro models: AI labels (cached) -> reward model (CLI) -> RL on the reward model (CLI);
direct RLAIF with a judge (CLI); the reward model's loss falls on soft labels."""

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from ltune.cli import main
from ltune.datamodules import EmbeddedTasks, PairwiseData
from ltune.judges import LMJudge, PairJudge
from ltune.objectives import RLAIF, RewardModel
from tests.conftest import MICRO, ROOT, micro_backbone, read_metrics, write_jsonl

PAIRS = {"format": "preference", "n": 8, "categories": ["add"]}
COLUMNS = {"response_a": "chosen", "response_b": "rejected"}
SMALL_RL = [
    "--trainer.max_steps=2",
    "--trainer.val_check_interval=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.train.init_args.n=4",
    "--data.init_args.val.init_args.n=2",
    "--data.init_args.batch_size=2",
    "--model.init_args.num_generations=2",
    "--model.init_args.max_completion_length=6",
    "--model.init_args.max_new_tokens=6",
]
MICRO_JUDGE = [a.replace("--model.init_args.backbone", "--model.init_args.judge.init_args.backbone") for a in MICRO]


class _NoJudge(PairJudge):
    def option_probs(self, contexts):
        raise AssertionError("the cached labels should have been used")


def _label(tmp_path, judge, val=None):
    dm = PairwiseData(
        train=EmbeddedTasks(**PAIRS), val=val, columns=COLUMNS, judge=judge, labels_path=str(tmp_path / "l.jsonl")
    )
    dm.tokenizer = micro_backbone().tokenizer
    dm.setup()
    return dm


def test_rlaif_label_then_reward_model_then_rl_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # stage 1: the judge labels the pairs; the labels equal the judge's own debiased preferences and are cached
    judge = LMJudge(backbone=micro_backbone())
    dm = _label(tmp_path, judge)
    rows = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    raw = EmbeddedTasks(**PAIRS).rows()
    expected, figures = judge.preference(
        [r["prompt"] for r in raw], [r["chosen"] for r in raw], [r["rejected"] for r in raw]
    )
    torch.testing.assert_close(torch.tensor([r["preference"] for r in rows]), expected)
    # the judge's own figures (position bias, label entropy) are kept beside the labels
    assert json.loads((tmp_path / "l.metrics.json").read_text()) == pytest.approx({"labeled": 8.0, **figures})
    assert [b["preference"] for b in dm.data["train"]] == [r["preference"] for r in rows]
    _label(tmp_path, _NoJudge())  # a second run reads the cache instead of asking the judge
    # a labeled val split gets its own cache beside the train one (it used to overwrite the train labels)
    val = EmbeddedTasks(**{**PAIRS, "split": "val", "n": 3})
    _label(tmp_path, judge, val=val)
    assert [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()] == rows
    val_rows = [json.loads(line) for line in (tmp_path / "l.val.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in val_rows] == [r["prompt"] for r in val.rows()]
    _label(tmp_path, _NoJudge(), val=val)  # both splits from their caches
    # stage 2: reward model on the labeled file
    main(["fit", "--config", str(ROOT / "configs/objectives/rlaif_reward_model.yaml"), *MICRO,
          "--trainer.max_steps=3", "--trainer.val_check_interval=3", "--trainer.log_every_n_steps=1",
          "--trainer.enable_progress_bar=false", "--data.init_args.judge=null", "--data.init_args.val=null",
          "--data.init_args.columns={}", f"--data.init_args.train={tmp_path / 'l.jsonl'}",
          "--data.init_args.batch_size=4", "--validate_around_fit=false"])  # fmt: skip
    logged = {k for r in read_metrics(Path("runs/rlaif_rm/version_0")) for k, v in r.items() if v}
    assert {"train/loss", "train/accuracy", "train/margin"} <= logged
    (ckpt,) = Path("runs/rlaif_rm/version_0/checkpoints").glob("*.ckpt")
    # stage 3: RL rewarded by that reward model
    main(["fit", "--config", str(ROOT / "configs/objectives/rlaif.yaml"), *MICRO, *SMALL_RL,
          f"--model.init_args.reward_model={ckpt}"])  # fmt: skip
    rows = read_metrics(Path("runs/rlaif/version_0"))
    rewards = [float(r["train/reward"]) for r in rows if r.get("train/reward")]
    assert rewards and all(math.isfinite(x) for x in rewards)
    assert any(r.get("train/kl") for r in rows) and any(r.get("val/exact_match") for r in rows)


class _Logger:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step):
        self.logged.append((metrics, step))


def test_labeler_figures_reach_the_trainers_loggers(tmp_path):
    logger, judge = _Logger(), LMJudge(backbone=micro_backbone())
    dm = PairwiseData(train=EmbeddedTasks(**PAIRS), columns=COLUMNS, judge=judge)
    dm.tokenizer = micro_backbone().tokenizer
    dm.trainer = type("T", (), {"loggers": [logger], "is_global_zero": True, "lightning_module": None})()
    dm.setup()
    ((metrics, step),) = logger.logged
    assert step == 0 and set(metrics) == {"labeler/labeled", "labeler/p_first_position", "labeler/entropy"}
    assert metrics["labeler/labeled"] == 8 and 0 <= metrics["labeler/p_first_position"] <= 1
    assert 0 < metrics["labeler/entropy"] <= math.log(2) + 1e-6  # float32


def test_direct_rlaif_config_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(ROOT / "configs/objectives/rlaif_direct.yaml"), *MICRO, *MICRO_JUDGE, *SMALL_RL])
    rows = read_metrics(Path("runs/rlaif_direct/version_0"))
    rewards = [float(r["train/reward"]) for r in rows if r.get("train/reward")]
    assert rewards and all(-1 <= x <= 1 for x in rewards)


def test_reward_model_fits_soft_labels(tmp_path):
    model = RewardModel(backbone=micro_backbone(), optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    rows = [dict(r, preference=0.9) for r in EmbeddedTasks(**{**PAIRS, "n": 16}).rows()]
    dm = PairwiseData(train=write_jsonl(tmp_path / "p.jsonl", rows), columns=COLUMNS, batch_size=16)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, max_steps=25)  # fmt: skip
    trainer.fit(model, dm)
    # the optimum of the soft CE at p = 0.9 is r_a - r_b = log 9 with loss H(0.9) = 0.325; it starts at log 2
    assert trainer.callback_metrics["train/loss"].item() < 0.5
    assert trainer.callback_metrics["train/accuracy"].item() > 0.5  # ranks most pairs the labeled way


def test_rlaif_needs_exactly_one_reward():
    with pytest.raises(ValueError, match="exactly one reward"):
        RLAIF(backbone=micro_backbone())
