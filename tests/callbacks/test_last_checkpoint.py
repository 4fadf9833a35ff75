"""Every ``ltune fit`` run saves its last step, whatever the validation interval, and ``ltune export`` takes a run
folder's newest checkpoint."""

from __future__ import annotations

import torch

from ltune.cli import main
from tests.conftest import MICRO, ROOT


def test_a_run_shorter_than_its_validation_interval_saves_its_last_step_and_exports_it(tmp_path, monkeypatch):
    """sft.yaml validates every 100 steps: a 3-step run used to leave no checkpoint."""
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(ROOT / "configs/objectives/sft.yaml"), *MICRO, "--trainer.max_steps=3",
          "--validate_around_fit=false", "--trainer.enable_progress_bar=false"])  # fmt: skip
    (run,) = (tmp_path / "runs" / "sft").glob("version_*")
    (last,) = (run / "checkpoints").glob("*.ckpt")  # one file: the checkpoint callback's own, at the last step
    assert last.name.endswith("-step=3.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 3
    main(["export", "--ckpt_path", str(run), "--output_dir", str(tmp_path / "hf")])
    assert (tmp_path / "hf" / "config.json").is_file()


def test_no_checkpoint_when_checkpointing_is_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(ROOT / "configs/objectives/sft.yaml"), *MICRO, "--trainer.max_steps=2",
          "--validate_around_fit=false", "--trainer.enable_checkpointing=false",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert not list(tmp_path.glob("runs/**/*.ckpt"))
