"""A micro model that already solves a few embedded problems (loops need a policy that sometimes succeeds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def cpu_env() -> dict[str, str]:
    """Environment of CLI subprocesses: offline, one thread (2 shared cores oversubscribe badly), repo importable."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "disabled"}  # fmt: skip


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
