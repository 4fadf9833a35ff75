"""A TTRL (GRPO) fit killed with SIGKILL after a checkpoint, then resumed from its last checkpoint, logs the losses
and rewards of an uninterrupted run at every later step: the sampling RNG continues where the checkpoint left it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ltune.cli import main
from tests.conftest import MICRO, ROOT, cpu_env, read_metrics

STEPS, EVERY = 10, 2  # 6 batches per epoch: the run crosses an epoch boundary
OVERLAY = f"""
trainer:
  max_steps: {STEPS}
  log_every_n_steps: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: runs, name: t}}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: ckpts, filename: "{{step}}", every_n_train_steps: {EVERY}, save_top_k: -1}}
validate_around_fit: false
model:
  init_args: {{num_votes: 4, num_generations: 2, max_completion_length: 16, max_new_tokens: 8}}
data:
  init_args:
    train: {{init_args: {{n: 12}}}}
    val: {{init_args: {{n: 4}}}}
    batch_size: 2
"""
KEYS = ("train/loss", "train/reward", "train/majority_voting_reward", "train/entropy")


def _args(folder: Path, *extra: str) -> list[str]:
    (folder / "overlay.yaml").write_text(OVERLAY)
    return ["fit", "--config", str(ROOT / "configs/objectives/ttrl.yaml"), "--config", "overlay.yaml", *MICRO, *extra]


def _logged(run_dir: Path) -> dict[int, dict[str, float]]:
    return {int(r["step"]): {k: float(r[k]) for k in KEYS} for r in read_metrics(run_dir) if r.get("train/loss")}


@pytest.mark.slow  # a CLI run in a subprocess (interpreter start-up dominates): ~30-60 s on 2 shared cores
def test_sigkill_mid_fit_then_resume_from_the_last_checkpoint_equals_a_straight_run(tmp_path, monkeypatch):
    straight, killed = tmp_path / "a", tmp_path / "b"
    straight.mkdir(), killed.mkdir()
    monkeypatch.chdir(straight)
    main(_args(straight))
    expected = _logged(straight / "runs/t/version_0")
    assert sorted(expected) == list(range(STEPS))

    proc = subprocess.Popen([sys.executable, "-m", "ltune.cli", *_args(killed)], cwd=killed, env=cpu_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not (killed / f"ckpts/step={EVERY}.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.stem.split("=")[1]) for p in (killed / "ckpts").glob("step=*.ckpt"))
    assert saved[-1] < STEPS, "killed too late: the fit had already finished"
    assert not list((killed / "ckpts").glob("*.tmp*"))

    monkeypatch.chdir(killed)
    main(_args(killed, f"--ckpt_path=ckpts/step={saved[-1]}.ckpt"))
    _assert_continues(_logged(killed / "runs/t/version_1"), expected, saved[-1])

    monkeypatch.chdir(straight)  # the straight run's checkpoint at the end of its first epoch resumes exactly too
    main(_args(straight, "--ckpt_path=ckpts/step=6.ckpt"))
    _assert_continues(_logged(straight / "runs/t/version_1"), expected, 6)


def _assert_continues(resumed: dict[int, dict[str, float]], expected: dict[int, dict[str, float]], start: int) -> None:
    assert sorted(resumed) == list(range(start, STEPS))
    for step, metrics in resumed.items():
        for key, value in metrics.items():
            assert value == pytest.approx(expected[step][key], rel=1e-6, abs=1e-7), (step, key)
