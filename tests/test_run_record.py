"""Every run leaves ``run.json`` (command, resolved config, commit, versions, machine, metrics; no secrets), W&B's
offline files hold the same config and the ``train/learning_rate`` / ``train/grad_norm`` series, and the logged
gradient norm is the total norm before clipping."""

import json
import struct
import subprocess
import sys

import lightning as L
import pytest
import torch

from ltune.datamodules import EmbeddedTasks, InstructionData
from ltune.objectives import SFT
from ltune.run_record import redact, redact_command
from tests.conftest import MICRO, ROOT, cpu_env, micro_backbone, quiet_trainer, read_metrics


def wandb_records(path):
    """The records of an offline W&B run file (``run-*.wandb``): a 7-byte header, then LevelDB-style log blocks of
    32 KiB whose chunks (full, first, middle, last) carry one protobuf ``Record`` each."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, buf = path.read_bytes(), 7, b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = data if kind in (1, 2) else buf + data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record


def test_a_run_writes_its_record_and_wandb_gets_the_whole_config(tmp_path):
    args = ["fit", "--config", str(ROOT / "configs/objectives/sft.yaml"), *MICRO, "--trainer.max_steps=3",
            "--trainer.log_every_n_steps=1", "--validate_around_fit=true", "--seed_everything=7"]  # fmt: skip
    env = {**cpu_env(), "WANDB_MODE": "offline"}  # a process of its own: W&B's settings are per process
    subprocess.run([sys.executable, "-m", "ltune.cli", *args], cwd=tmp_path, env=env, check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    run = tmp_path / "runs/sft/version_0"
    record = json.loads((run / "run.json").read_text())
    assert record["command"][1:4] == ["fit", "--config", args[2]] and record["command"][-1] == "--seed_everything=7"
    config = record["config"]
    lr = config["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    assert config["trainer"]["max_steps"] == 3 and config["seed_everything"] == 7
    assert config["data"]["class_path"] == "ltune.datamodules.InstructionData"
    assert record["versions"]["torch"] == torch.__version__ and record["machine"]["cpus"] >= 1
    fit = record["stages"]["fit"]
    assert fit["global_step"] == 3 and {"train/loss", "train/grad_norm", "train/learning_rate"} <= set(fit["metrics"])
    assert set(record["validation"]) == {"before", "after"} and "val/loss" in record["validation"]["after"]

    csv = [r for r in read_metrics(run) if r.get("train/grad_norm") not in (None, "")]
    assert len(csv) == 3 and all(float(r["train/learning_rate"]) == pytest.approx(lr) for r in csv)

    (wandb_file,) = (tmp_path / "runs/wandb").glob("offline-run-*/run-*.wandb")
    wandb_config, history = {}, []
    for rec in wandb_records(wandb_file):
        kind = rec.WhichOneof("record_type")
        if kind == "config":
            wandb_config.update({item.key: json.loads(item.value_json) for item in rec.config.update})
        elif kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item}
            )
    for key in ("model", "data", "trainer", "seed_everything", "versions", "command"):
        assert wandb_config[key] == record[key] if key in record else wandb_config[key] == config[key], key
    logged = [h for h in history if "train/grad_norm" in h]
    assert [h["train/grad_norm"] for h in logged] == pytest.approx([float(r["train/grad_norm"]) for r in csv])
    assert all(h["train/learning_rate"] == pytest.approx(lr) for h in logged)


def test_secrets_never_reach_the_record():
    argv = ["ltune", "fit", "--model.judge.api_key=sk-1", "--hub_token", "hf_x", "--model.max_new_tokens=8"]
    assert redact_command(argv) == ["ltune", "fit", "--model.judge.api_key=<redacted>", "--hub_token", "<redacted>",
                                    "--model.max_new_tokens=8"]  # fmt: skip
    config = {"judge": {"api_key": "sk-1", "hf_token": "hf_x", "max_new_tokens": 8, "pad_token": "<pad>"},
              "loggers": [{"password": "p", "name": "run"}], "token": "t"}  # fmt: skip
    assert redact(config) == {
        "judge": {"api_key": "<redacted>", "hf_token": "<redacted>", "max_new_tokens": 8, "pad_token": "<pad>"},
        "loggers": [{"password": "<redacted>", "name": "run"}],
        "token": "<redacted>",
    }


class _GradNorm(L.Callback):
    """The float64 total gradient norm as the optimizer step sees it before clipping, and what the objective logged."""

    def __init__(self) -> None:
        self.expected, self.logged = [], []

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:  # callbacks run before the module's hook
        grads = [p.grad.double().flatten() for p in module.parameters() if p.grad is not None]
        self.expected.append(float(torch.cat(grads).norm()))

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.logged.append(float(trainer.callback_metrics["train/grad_norm"]))
        self.lr = float(trainer.callback_metrics["train/learning_rate"])


def test_grad_norm_is_the_total_norm_before_clipping_and_the_learning_rate_is_the_steps():
    model = SFT(backbone=micro_backbone(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda step: 0.5**step))  # fmt: skip
    probe = _GradNorm()
    trainer = quiet_trainer(max_steps=3, gradient_clip_val=1e-3, callbacks=[probe])
    trainer.fit(model, InstructionData(train=EmbeddedTasks(n=48, categories=["add"]), batch_size=16))
    assert min(probe.expected) > 1e-2  # clipping to 1e-3 would have changed every one of them
    assert probe.logged == pytest.approx(probe.expected, rel=1e-5)
    assert probe.lr == pytest.approx(0.1 * 0.5**2)  # the rate the third step used
