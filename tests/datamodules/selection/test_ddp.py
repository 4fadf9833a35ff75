"""DEITA and MoDS under DDP: each rank scores its shard of the pool, the scores are gathered, and the pool-level
steps (DEITA's Repr Filter, MoDS's quality threshold and k-center greedy) run on the whole pool on every rank, so two
gloo processes keep exactly the rows one process keeps (the statistics are global, as their docstrings say)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.datamodules.selection import test_deita, test_mods

POOL = [test_deita.chat(f"What is {i} + {2 * i}?", f"{i} + {2 * i} = {3 * i}. " * (1 + i % 3)) for i in range(8)]


def _make(name: str, tmp: Path):
    if name == "deita":
        return test_deita.make(tmp, rows=POOL, budget=3, embedder=test_deita.micro_backbone(), tau=0.985)
    return test_mods.make(tmp, budget=3, alpha=0.0)


def _worker(rank: int, world: int, port: int, name: str, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    sel = _make(name, Path(tmp) / f"rank{rank}")  # the same pool file written once per rank: no write race
    sel.select()
    torch.save({"scores": sel.scores, "selected": sel.selected}, f"{tmp}/{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deita", "mods"])
def test_two_ranks_select_the_rows_one_process_selects(name, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for rank in (0, 1):
        (tmp_path / f"rank{rank}").mkdir()
    torch.multiprocessing.spawn(_worker, args=(2, port, name, str(tmp_path)), nprocs=2)
    (tmp_path / "one").mkdir()
    one = _make(name, tmp_path / "one")
    one.select()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        assert got["selected"] == one.selected
        assert got["scores"].keys() == one.scores.keys()
        for key, value in one.scores.items():  # sharded batches pad differently: float32 rounding only
            np.testing.assert_allclose(got["scores"][key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert 2 <= len(one.selected) <= 3  # the micro embeddings are alike: tau 0.985 keeps some, rejects some
