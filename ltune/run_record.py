"""One record of each run, ``<log dir>/run.json``: the command, the resolved config (secrets left out), the commit
and versions of the stack, the machine and its load, and the metrics each stage ended with. The same record (less
its metrics, the config's keys at the top) is the W&B run config; study drivers read their figures from it, never
from printed output.

Written by :class:`RunRecord`, the ``ltune`` CLI's ``save_config_callback``: beside ``config.yaml`` when a run sets up,
updated when each stage (fit, validate, ...) ends, and by the CLI with the validation before and after fit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from ltune.io import atomic_write_text
from ltune.versions import machine, stack_versions

FILENAME = "run.json"
SECRET = re.compile(
    r"^token$|(^|_)(api_?key|(auth|access|bearer|refresh|hf|hub|wandb|api)_token|secret|password)$", re.IGNORECASE
)


def redact(value: Any) -> Any:
    """``value`` with every string under a secret-looking key (``api_key``, ``hf_token``, ``password``, ...)
    replaced by ``"<redacted>"``."""
    if isinstance(value, dict):
        return {
            k: "<redacted>" if SECRET.search(str(k)) and isinstance(v, str) else redact(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def redact_command(argv: list[str]) -> list[str]:
    """``argv`` with the value of every secret-looking flag (``--judge.api_key=...``, ``--hub_token X``) redacted."""
    out, hide_next = [], False
    for arg in argv:
        flag, eq, _ = arg.partition("=")
        secret = arg.startswith("--") and bool(SECRET.search(flag.lstrip("-").rsplit(".", 1)[-1]))
        out.append("<redacted>" if hide_next else f"{flag}=<redacted>" if secret and eq else arg)
        hide_next = secret and not eq
    return out


def source_commit() -> dict[str, Any] | None:
    """The git commit of ltune's source tree and whether it has uncommitted changes (``None`` outside a checkout)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None

    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout

    try:
        return {"commit": run("rev-parse", "HEAD").strip(), "dirty": bool(run("status", "--porcelain").strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """The record of the run in ``run_dir`` (its log dir), ``{}`` when it has none."""
    path = Path(run_dir) / FILENAME
    return json.loads(path.read_text()) if path.is_file() else {}


def update_record(run_dir: str | Path, **fields: Any) -> Path:
    """Merge ``fields`` into ``run_dir``'s record (one level deep: a dict field merges into the one there)."""
    record = read_record(run_dir)
    for key, value in fields.items():
        record[key] = (
            {**record[key], **value} if isinstance(value, dict) and isinstance(record.get(key), dict) else value
        )
    return atomic_write_text(Path(run_dir) / FILENAME, json.dumps(record, indent=1, default=str) + "\n")


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The one-number entries of a Lightning metrics dict, as floats."""
    return {k: float(v) for k, v in sorted(metrics.items()) if getattr(v, "numel", lambda: 1)() == 1}


class RunRecord(SaveConfigCallback):
    """LightningCLI's config saver that also writes ``run.json`` and gives W&B the whole run config.

    At set-up (rank 0): ``config.yaml`` as LightningCLI writes it, then ``run.json`` (command, resolved config,
    commit, versions, machine) and the same fields as the config of every W&B logger. When a stage ends: its final
    metrics (``stages.<stage>.metrics``), the global step and the seconds since set-up.

    Args:
        *args: LightningCLI's parser and config (and ``SaveConfigCallback``'s options).
        command: The command line as typed (default ``sys.argv``).
        **kwargs: ``SaveConfigCallback``'s options (``overwrite``, ``config_filename``, ...).
    """

    def __init__(self, *args: Any, command: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command = command or list(sys.argv)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.log_dir = trainer.log_dir  # on every rank (the property broadcasts); save_config runs on rank 0 alone
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._started = time.time()
        record = {
            "command": redact_command(self.command),
            "config": redact(json.loads(json.dumps(self.config.as_dict(), default=str))),
            "ltune": source_commit(),
            "versions": stack_versions(),
            "machine": machine(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if self.log_dir:
            update_record(self.log_dir, **record)
        wandb_config = {**record["config"], **{k: record[k] for k in ("command", "ltune", "versions", "machine")}}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # the config's own keys at the top: model, data, trainer, seed
                logger.experiment.config.update(wandb_config, allow_val_change=True)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        log_dir = getattr(self, "log_dir", None)
        if trainer.is_global_zero and log_dir and (Path(log_dir) / FILENAME).is_file():
            stage = trainer.state.stage.value if trainer.state.stage else "unknown"
            ended = {"global_step": trainer.global_step, "interrupted": True, "error": repr(exception)[:500]}
            update_record(log_dir, stages={stage: ended})

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        log_dir = getattr(self, "log_dir", None)
        if not trainer.is_global_zero or not log_dir or not (Path(log_dir) / FILENAME).is_file():
            return
        ended = {
            "global_step": trainer.global_step,
            "interrupted": trainer.interrupted,
            "elapsed_s": round(time.time() - getattr(self, "_started", time.time()), 1),
            "metrics": scalar_metrics(trainer.callback_metrics),
        }
        update_record(log_dir, stages={stage: ended})
