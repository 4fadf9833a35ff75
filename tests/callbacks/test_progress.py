"""Progress as Lightning users know it: the training bar counts steps (not ``Epoch 0/-2``), generation inside an
evaluation batch and each E-step chunk show progress with rows/s, and a trainer's own bar (or none) is respected."""

from __future__ import annotations

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from ltune.callbacks import StepProgress
from ltune.cli import LTuneCLI, _cli, main
from tests.conftest import MICRO, ROOT

SFT = ["--config", str(ROOT / "configs/objectives/sft.yaml"), *MICRO, "--trainer.logger=false"]


def test_the_training_bar_counts_steps_and_generation_shows_rows_per_second(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli = _cli(LTuneCLI, ["fit", *SFT, "--trainer.max_steps=3", "--data.init_args.eval_prompts.init_args.n=4",
                          "--trainer.limit_val_batches=1"])  # fmt: skip
    bar = cli.trainer.progress_bar_callback
    assert isinstance(bar, StepProgress) and cli.trainer.max_epochs == -1
    assert bar._get_train_description(0) == "Step 3/3"  # Lightning's: "Epoch 0/-2"
    out = "".join(capsys.readouterr())  # rich's live display carries what tqdm writes meanwhile
    assert "Step 3/3" in out and "Epoch 0/-2" not in out
    assert "generating: 4 rows" in out and "rows/s" in out  # the validation batch's decode steps, then its rate


def test_a_trainers_own_progress_bar_or_none_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = _cli(LTuneCLI, [*SFT, "--trainer.callbacks+=TQDMProgressBar"], run=False)
    assert isinstance(own.trainer.progress_bar_callback, TQDMProgressBar)
    assert not any(isinstance(c, StepProgress) for c in own.trainer.callbacks)
    off = _cli(LTuneCLI, [*SFT, "--trainer.enable_progress_bar=false"], run=False)
    assert off.trainer.progress_bar_callback is None


@pytest.mark.slow  # one shortened ReST-EM round on the micro solver
def test_each_e_step_chunk_advances_a_bar_with_rows_per_second(tmp_path, monkeypatch, capsys, solver_dir):
    from tests.callbacks.conftest import rest_em_config

    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(rest_em_config(tmp_path, solver_dir, rounds=1)), "--trainer.enable_progress_bar=true"])
    out = "".join(capsys.readouterr())
    assert "round 0 E-step" in out and "rows/s" in out  # round 0: produced by the initial model at fit start
