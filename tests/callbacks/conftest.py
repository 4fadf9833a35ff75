"""A micro model that already solves a few embedded problems (loops need a policy that sometimes succeeds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import cpu_env

ROOT = Path(__file__).resolve().parents[2]
SOLVER = """
import lightning as L, torch
from tests.conftest import micro_backbone
from ltune import SFT
from ltune.datamodules import EmbeddedTasks, InstructionData
torch.manual_seed(0)
model = SFT(backbone=micro_backbone(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
data = InstructionData(train=EmbeddedTasks(n=400, categories=["compare"], difficulties=[1]), max_length=96,
                       batch_size=32)
L.Trainer(accelerator="cpu", max_steps=300, logger=False, enable_checkpointing=False, enable_progress_bar=False,
          enable_model_summary=False).fit(model, data)
model.export(r"{out}")
"""


@pytest.fixture(scope="session")
def solver_dir(tmp_path_factory) -> Path:
    """An exported micro Llama after 300 SFT steps on 'Which is larger, a or b?' (about 40 s on one thread)."""
    out = tmp_path_factory.mktemp("solver") / "hf"
    subprocess.run([sys.executable, "-c", SOLVER.format(out=out)], cwd=ROOT, env=cpu_env(), check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    return out


@pytest.fixture
def one_thread():
    """Run an in-process training on one intra-op thread (2 shared cores oversubscribe badly), then restore."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rest_em_config(
    tmp_path: Path, solver_dir: Path, rounds: int = 2, name: str = "rest_em", config: str = "configs/loops/rest_em.yaml"
) -> Path:
    """A ReST-EM config (configs/loops/rest_em.yaml) shrunk to seconds: 64 comparison problems, 4 samples each, the
    micro solver."""
    cfg = yaml.safe_load((ROOT / config).read_text())
    loop = cfg["trainer"]["callbacks"][0]["init_args"]
    loop["problems"]["init_args"].update(n=64, categories=["compare"], difficulties=[1])
    loop.update(rounds=rounds, num_samples=4, max_solutions=2, max_new_tokens=40, epochs_per_round=1, chunk_size=8)
    cfg["trainer"]["logger"] = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                 "init_args": {"save_dir": str(tmp_path / "runs"), "name": name}}]  # fmt: skip
    cfg["trainer"]["enable_progress_bar"] = False
    cfg["model"]["init_args"]["backbone"]["name_or_path"] = str(solver_dir)
    cfg["model"]["init_args"]["max_new_tokens"] = 40
    cfg["data"]["init_args"].update(batch_size=8, eval_batch_size=16, max_length=96)
    cfg["data"]["init_args"]["eval_prompts"]["init_args"].update(n=16, categories=["compare"], difficulties=[1])
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
