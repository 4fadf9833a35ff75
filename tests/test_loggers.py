"""W&B logging needs no network: offline unless an API key is configured."""

import os
import subprocess
import sys
from pathlib import Path

from ltune.loggers import wandb_logged_in


def test_logged_in_detection(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_logged_in()
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k\n")
    assert wandb_logged_in()
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_logged_in()


def test_offline_run_writes_local_files_without_network(tmp_path):
    # a fresh process: wandb keeps global settings, and the suite itself runs with WANDB_MODE=disabled
    code = (
        "from ltune.loggers import Wandb;"
        f"lg = Wandb(project='ltune-test', name='t', save_dir={str(tmp_path / 'runs')!r});"
        "lg.log_metrics({'train/loss': 1.0}, step=0); lg.experiment.finish()"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    env["NETRC"] = str(tmp_path / "netrc")  # no credentials: the logger must choose offline by itself
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=300)
    runs = list(Path(tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_wandb_mode_disabled_is_respected(tmp_path):
    # Lightning's WandbLogger(offline=True) overwrites WANDB_MODE; the user's "disabled" must still win
    code = (
        "from ltune.loggers import Wandb;"
        f"lg = Wandb(project='ltune-test', name='t', save_dir={str(tmp_path / 'runs')!r});"
        "lg.log_metrics({'train/loss': 1.0}, step=0); import wandb, os;"
        "assert wandb.run is None or wandb.run.disabled, wandb.run; print(os.environ['WANDB_MODE'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(WANDB_MODE="disabled", NETRC=str(tmp_path / "netrc"))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "disabled"
    assert not list(Path(tmp_path / "runs" / "wandb").glob("offline-run-*"))
