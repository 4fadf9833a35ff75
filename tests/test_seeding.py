"""One seed knob: ``--seed_everything S`` alone moves every seeded component of a run (initialisation, problems drawn,
shuffling, E-step chunks), the same seed repeats bit for bit, and held-out sets stay fixed."""

import torch

from ltune.cli import LTuneCLI, _cli, main
from ltune.datamodules import EmbeddedTasks
from ltune.seeding import ENV, run_seed
from tests.conftest import MICRO, ROOT, read_metrics

CFG = """
trainer:
  accelerator: cpu
  max_steps: 6
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_checkpointing: false
  logger: {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs, name: s}}
model:
  class_path: ltune.SFT
  init_args:
    optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.01}}
data:
  class_path: ltune.datamodules.InstructionData
  init_args:
    train: {class_path: ltune.datamodules.EmbeddedTasks, init_args: {n: 64}}
    val: {class_path: ltune.datamodules.EmbeddedTasks, init_args: {n: 16, split: val}}
    batch_size: 8
"""


def test_run_seed_prefers_the_components_own_then_the_runs_then_zero(monkeypatch):
    assert run_seed() == 0 and run_seed(7) == 7
    monkeypatch.setenv(ENV, "3")
    assert run_seed() == 3 and run_seed(7) == 7 and run_seed(0) == 0


def test_training_problems_follow_the_run_seed_held_out_sets_do_not(monkeypatch):
    monkeypatch.setenv(ENV, "5")
    assert EmbeddedTasks(n=8).seed == 5 and EmbeddedTasks(n=8, seed=2).seed == 2
    assert EmbeddedTasks(n=8, split="val").seed == 0 and EmbeddedTasks(n=8, split="test", seed=4).seed == 4
    monkeypatch.setenv(ENV, "6")
    assert list(EmbeddedTasks(n=8, split="val").load()) == list(EmbeddedTasks(n=8, split="val", seed=0).load())
    assert list(EmbeddedTasks(n=8).load()) != list(EmbeddedTasks(n=8, seed=5).load())


ROUNDS = (
    '[{"class_path": "ltune.callbacks.ReSTEM", "init_args": {"rounds": 1, "problems": {"class_path": '
    '"ltune.datamodules.EmbeddedTasks", "init_args": {"format": "prompts", "n": 8}}}}]'
)


def _built(seed: int, *extra: str):
    args = ["--config", str(ROOT / "configs/quickstart.yaml"), *MICRO, f"--seed_everything={seed}",
            "--trainer.logger=false", f"--trainer.callbacks={ROUNDS}", *extra]  # fmt: skip
    return _cli(LTuneCLI, args, run=False)


def test_seed_everything_alone_moves_initialisation_data_shuffling_and_rounds():
    built = [(cli := _built(seed), next(cli.model.backbone.load_model().parameters())) for seed in (1, 2, 1)]
    (one, w1), (two, w2), (_, again) = built
    assert not torch.equal(w1, w2) and torch.equal(w1, again)
    for cli, seed in ((one, 1), (two, 2)):
        data, (rounds,) = cli.datamodule, [c for c in cli.trainer.callbacks if hasattr(c, "chunk_size")]
        assert data.seed == seed and data.sources["train"].seed == seed and rounds.seed == seed
        assert rounds.problems.seed == seed
        assert data.sources["eval"].seed == 0  # the held-out prompts stay fixed across seeds
    explicit = _built(2, "--data.init_args.train.init_args.seed=1", "--data.init_args.seed=1")
    assert explicit.datamodule.seed == 1 and explicit.datamodule.sources["train"].seed == 1  # a component's own wins


def _losses(run) -> list[float]:
    return [float(r["train/loss"]) for r in read_metrics(run) if r.get("train/loss")]


def test_two_seeds_give_different_runs_and_one_seed_repeats_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(CFG)
    for seed in (1, 2, 1):
        main(["fit", "--config", "c.yaml", *MICRO, f"--seed_everything={seed}"])
    first, other, repeat = (_losses(tmp_path / f"runs/s/version_{v}") for v in range(3))
    assert len(first) == 6 and first == repeat  # bit for bit: the CSV holds the exact float
    assert all(a != b for a, b in zip(first, other))
