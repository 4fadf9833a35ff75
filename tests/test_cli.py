"""The real CLI: every config parses, the quickstart runs (shortened), export reloads, resume, DDP on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from ltune.cli import main
from ltune.rewards import answer_matches, final_answer, is_equivalent
from tests.conftest import MICRO, ROOT, read_metrics


def _is_fragment(path: Path) -> bool:
    """A fragment (trainer, logger, model) composes with a method config: it names no objective of its own."""
    return "class_path" not in (yaml.safe_load(path.read_text()).get("model") or {})


ALL = sorted((ROOT / "configs").rglob("*.yaml"))
CONFIGS = [p for p in ALL if not _is_fragment(p)]
# configs/real/ holds study recipes: fragments of one method config each (their header's commands name it, and
# tests/test_documented_commands.py parses those), not generic fragments that compose with any method.
RECIPES = [p for p in ALL if _is_fragment(p) and p.parent.name == "real"]
FRAGMENTS = [p for p in ALL if _is_fragment(p) and p not in RECIPES]


def _run(args, capsys=None):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_validates_with_print_config(config, capsys):
    _run(["fit", "--config", str(config), "--print_config"])
    assert "class_path" in capsys.readouterr().out


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_fragments_compose(fragment, capsys):
    base = "grpo" if fragment.parent.name in ("rewards", "samplers") else "sft"  # pieces of the GRPO family
    _run(
        ["fit", "--config", str(ROOT / f"configs/objectives/{base}.yaml"), "--config", str(fragment), "--print_config"]
    )


def test_every_config_starts_with_its_command():
    for config in CONFIGS + FRAGMENTS + RECIPES:
        head = config.read_text().split("\n\n")[0]
        assert head.startswith("#") and "ltune fit --config configs/" in head, config


def test_help_lists_verbs(capsys):
    _run(["--help"])
    out = capsys.readouterr().out
    verbs = ("fit", "validate", "test", "predict", "select", "scaling", "export", "fetch")
    assert all(f"\n  {verb} " in out for verb in verbs), out[:1500]
    _run(["fit", "--model", "ltune.SFT", "--model.help", "ltune.SFT"])
    assert "max_new_tokens" in capsys.readouterr().out


def test_quickstart_runs_through_the_cli_and_exports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            *MICRO,
            "--trainer.max_steps=6",
            "--trainer.val_check_interval=3",
            "--trainer.log_every_n_steps=1",
            "--data.init_args.eval_prompts.init_args.n=8",
            "--data.init_args.train.init_args.n=64",
            "--trainer.enable_progress_bar=false",
            "--model.init_args.eval_samples=2",
        ]
    )
    out = capsys.readouterr().out
    assert "validation before -> after fit" in out and "val/exact_match" in out
    run = tmp_path / "runs/quickstart/version_0"
    rows = read_metrics(run)
    assert any(r.get("train/loss") for r in rows) and sum(1 for r in rows if r.get("val/exact_match")) >= 3
    # every evaluation saved its completions; val/exact_match is the share of them marked correct
    saved = sorted(p.name for p in (run / "completions").glob("*.jsonl"))
    assert saved == ["fit-step3.jsonl", "fit-step6.jsonl", "validate-step0.jsonl", "validate-step6.jsonl"]
    evals = [r for r in rows if r.get("val/maj@2")]  # in order: validate-step0, fit-step3, fit-step6, validate-step6
    assert len(evals) == 4
    for name, row in zip(["validate-step0.jsonl", "fit-step3.jsonl", "fit-step6.jsonl", "validate-step6.jsonl"], evals):
        done = [json.loads(line) for line in (run / "completions" / name).read_text().splitlines()]
        assert len(done) == 8 and all(len(d["samples"]) == 2 and d["prompt"] for d in done)
        assert all(d["correct"] == is_equivalent(final_answer(d["completion"]), d["reference"]) for d in done)
        assert float(row["val/exact_match"]) == pytest.approx(sum(d["correct"] for d in done) / 8)
        pass1 = sum(answer_matches(t, d["reference"]) for d in done for t in d["samples"]) / 16
        assert float(row["val/pass@1"]) == pytest.approx(pass1)
    assert (run / "config.yaml").is_file()
    hf = AutoModelForCausalLM.from_pretrained(run / "hf")
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    main(["export", "--ckpt_path", str(ckpt), "--output_dir", "exported"])
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "exported")
    ids = torch.tensor([[81, 35, 52, 46, 53, 66, 13, 68, 35]])
    torch.testing.assert_close(exported(ids).logits, hf(ids).logits)


RESUME_CFG = """
seed_everything: 0
trainer:
  accelerator: cpu
  log_every_n_steps: 1
  enable_progress_bar: false
  logger: {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs, name: r}}
  callbacks:
    - {class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {every_n_train_steps: 5, save_top_k: -1}}
model:
  class_path: ltune.SFT
  init_args:
    optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.01}}
data:
  class_path: ltune.datamodules.InstructionData
  init_args:
    train: {class_path: ltune.datamodules.EmbeddedTasks, init_args: {n: 96}}
    batch_size: 8
"""


def _losses(run_dir: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["train/loss"]) for r in read_metrics(run_dir) if r.get("train/loss")}


def test_resume_mid_epoch_continues_the_same_loss_trajectory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(RESUME_CFG)
    base = ["fit", "--config", "c.yaml", *MICRO]
    main([*base, "--trainer.max_steps=16"])  # 12 batches per epoch: crosses an epoch boundary
    main([*base, "--trainer.max_steps=5"])  # stopped mid-epoch, checkpoint at step 5
    ckpt = next((tmp_path / "runs/r/version_1/checkpoints").glob("*step=5.ckpt"))
    main([*base, "--trainer.max_steps=16", f"--ckpt_path={ckpt}"])
    straight, resumed = _losses(tmp_path / "runs/r/version_0"), _losses(tmp_path / "runs/r/version_2")
    assert sorted(resumed) == list(range(5, 16))
    for step in resumed:
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), step


@pytest.mark.slow
def test_ddp_two_cpu_processes_reduce_metrics_across_ranks(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    common = [
        "--config",
        str(ROOT / "configs/objectives/sft.yaml"),
        *MICRO,
        "--trainer.enable_progress_bar=false",
        "--data.init_args.train.init_args.n=64",
        "--data.init_args.val.init_args.n=37",
        "--data.init_args.eval_prompts.init_args.n=11",
        "--validate_around_fit=false",
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ltune.cli",
            "fit",
            *common,
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=4",
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    ddp_run = tmp_path / "runs/sft/version_0"
    ddp = [r for r in read_metrics(ddp_run) if r.get("val/tokens")][-1]
    (ckpt,) = (ddp_run / "checkpoints").glob("*.ckpt")
    subprocess.run(
        [sys.executable, "-m", "ltune.cli", "validate", *common, f"--ckpt_path={ckpt}"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    single = [r for r in read_metrics(tmp_path / "runs/sft/version_1") if r.get("val/tokens")][-1]
    assert float(ddp["val/tokens"]) == float(single["val/tokens"]) > 0  # every val token counted exactly once
    for key in ("val/loss", "val/token_accuracy", "val/exact_match"):
        assert float(ddp[key]) == pytest.approx(float(single[key]), rel=1e-4), key
    # rank 0 saved every rank's completions once: the same greedy completions as the one process
    ddp_done, single_done = (
        sorted(json.loads(line)["prompt"] + json.loads(line)["completion"] for line in f.read_text().splitlines())
        for f in (
            ddp_run / "completions/fit-step4.jsonl",
            tmp_path / "runs/sft/version_1/completions/validate-step0.jsonl",
        )
    )
    assert len(ddp_done) == 11 and ddp_done == single_done


def test_budget_list_reads_fractions_and_row_counts():
    from ltune.data_verbs import budget_list

    assert budget_list("0.1,0.2,500,1.0") == [0.1, 0.2, 500, 1.0]
    assert [type(b) for b in budget_list("0.5,500")] == [float, int]  # a float is a fraction, an int a count


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_real_model_fragment_composes_with_every_config(config, capsys):
    """`--config <method> --config configs/models/smollm2.yaml` moves the policy (and the judges left at null)."""
    _run(["fit", "--config", str(config), "--config", str(ROOT / "configs/models/smollm2.yaml"), "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["init_args"]["backbone"]["name_or_path"] == "smollm2-135m-instruct"
    assert cfg["model"]["init_args"]["backbone"]["lora"]["r"] == 16


def test_default_root_dir_moves_every_output_of_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    main(["fit", "--config", str(ROOT / "configs/quickstart.yaml"), *MICRO, "--trainer.max_steps=2",
          "--data.init_args.eval_prompts.init_args.n=4", "--data.init_args.train.init_args.n=32",
          "--validate_around_fit=false", "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
          "--trainer.val_check_interval=2", "--trainer.default_root_dir=out"])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work"]  # nothing written beside it
    run = tmp_path / "out/runs/quickstart/version_0"
    assert (run / "metrics.csv").is_file() and (run / "hf/config.json").is_file() and (run / "config.yaml").is_file()
    assert next((run / "checkpoints").glob("*.ckpt"))
    main(["select", "--config", str(ROOT / "configs/selection/random.yaml"), *MICRO, "--trainer.logger=false",
          "--trainer.default_root_dir=sel", "--output=kept.jsonl"])  # fmt: skip
    assert (tmp_path / "sel/kept.jsonl").is_file() and not (tmp_path / "kept.jsonl").exists()
