"""W&B logging needs no network: offline unless an API key is configured."""

from pathlib import Path

from ltune.loggers import Wandb, wandb_logged_in


def test_logged_in_detection(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_logged_in()
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k\n")
    assert wandb_logged_in()
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_logged_in()


def test_offline_run_writes_local_files_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = Wandb(project="ltune-test", name="t", save_dir=str(tmp_path / "runs"))
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.experiment.finish()
    runs = list(Path(tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
