"""configs/objectives/ttrl.yaml through the real CLI (shrunk): it trains, logs TTRL's metrics, validates."""

from pathlib import Path

import pytest

from ltune.cli import main
from tests.conftest import MICRO, ROOT, read_metrics

SMALL = [
    "--trainer.max_steps=2",
    "--trainer.val_check_interval=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.train.init_args.n=8",
    "--data.init_args.val.init_args.n=4",
    "--data.init_args.batch_size=2",
    "--model.init_args.max_completion_length=8",
    "--model.init_args.max_new_tokens=8",
]


VARIANTS = {  # GRPO's loss variants and off-policy steps through the same config
    "grpo": [],
    "placebo": ["--model.init_args.placebo=true"],
    "gspo_mu2": ["--model.init_args.importance_sampling_level=sequence", "--model.init_args.loss_type=grpo",
                 "--model.init_args.num_iterations=2"],
    "cispo_rloo": ["--model.init_args.loss_type=cispo", "--model.init_args.epsilon_high=5.0",
                   "--model.init_args.advantage_estimator=rloo", "--model.init_args.num_iterations=2"],
}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_ttrl_config_runs_through_the_cli(variant, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/objectives/ttrl.yaml"),
            *MICRO,
            *SMALL,
            "--model.init_args.num_votes=4",
            "--model.init_args.num_generations=2",
            *VARIANTS[variant],
        ]
    )
    assert "validation before -> after fit" in capsys.readouterr().out
    rows = read_metrics(Path("runs/ttrl/version_0"))
    logged = {k for r in rows for k, v in r.items() if v}
    for key in (
        "loss",
        "reward",
        "frac_reward_zero_std",
        "label_accuracy",
        "reward_accuracy",
        "majority_ratio",
        "ground_truth_ratio",
        "pass@4",
        "completions/clipped_ratio",
        "entropy",
        "cispo_clip_ratio" if "cispo" in variant else "clip_ratio/region_mean",
    ):
        assert f"train/{key}" in logged, key
    assert "val/exact_match" in logged
