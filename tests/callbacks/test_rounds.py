"""The rounds base: schedule, swapped train sets, files, reset to base, per-chunk seeding, resume mid-E-step."""

from __future__ import annotations

import json
import random

import lightning as L
import pytest
import torch

from ltune import SFT
from ltune.callbacks.rounds import Rounds, chunk_seed, read_jsonl
from ltune.datamodules import EmbeddedTasks, InstructionData
from tests.conftest import micro_backbone


class Killed(Exception):
    pass


class Toy(Rounds):
    """Round r's rows: one per item, with random draws that show the per-chunk seeding."""

    def __init__(self, fail_at: tuple[int, int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_at, self.calls, self.epoch_rows = fail_at, [], []

    def e_step_items(self, trainer, pl_module, round):
        return [{"i": i} for i in range(5)]

    def e_step(self, trainer, pl_module, round, items):
        chunk = items[0]["i"] // self.chunk_size
        if (round, chunk) == self.fail_at:
            raise Killed("simulated kill")
        self.calls.append((round, chunk))
        return [
            {"prompt": f"q{it['i']}", "response": f"r{round} {torch.randint(1000, (1,)).item()} {random.random():.6f}"}
            for it in items
        ]

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_rows.append(len(trainer.train_dataloader.dataset))


def _fit(tmp_path, loop, ckpt_path=None, name="run"):
    torch.manual_seed(0)
    model = SFT(backbone=micro_backbone(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    data = InstructionData(train=EmbeddedTasks(n=12), max_length=64, batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu", logger=L.pytorch.loggers.CSVLogger(tmp_path, name=name), callbacks=[loop],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data, ckpt_path=ckpt_path, weights_only=False)
    return trainer, model


def test_rounds_swap_the_train_set_and_write_files(tmp_path):
    loop = Toy(rounds=3, chunk_size=2)
    trainer, _ = _fit(tmp_path, loop)
    assert trainer.current_epoch == 3 and trainer.max_epochs == 3
    assert loop.epoch_rows == [12, 5, 5]  # round 0: the DataModule's rows; then the produced ones
    assert loop.calls == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    folder = loop.dir
    for r in (1, 2):
        rows = read_jsonl(folder / f"round_{r}" / "train.jsonl")
        assert [row["prompt"] for row in rows] == [f"q{i}" for i in range(5)]
        assert all(row["response"].startswith(f"r{r} ") for row in rows)
        assert loop.paths[r] == str(folder / f"round_{r}" / "train.jsonl")
    history = json.loads((folder / "rounds.json").read_text())
    assert [h["round"] for h in history] == [0, 1, 2] and history[1]["rows"] == 5
    assert not list(folder.rglob("*.tmp*"))  # every write completed and was renamed


def test_chunks_are_seeded_independently_of_history(tmp_path):
    loop = Toy(rounds=2, chunk_size=2)
    _fit(tmp_path, loop)
    rows = read_jsonl(loop.dir / "round_1" / "chunk_00001.jsonl")
    torch.manual_seed(chunk_seed(0, 1, 1))
    random.seed(chunk_seed(0, 1, 1))
    expected = [f"r1 {torch.randint(1000, (1,)).item()} {random.random():.6f}" for _ in range(2)]
    assert [r["response"] for r in rows] == expected
    assert chunk_seed(0, 1, 1) != chunk_seed(0, 1, 2) != chunk_seed(1, 1, 1)


def test_reset_to_base_reloads_the_initial_weights_and_fresh_optimizer(tmp_path):
    class Check(Toy):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                base = micro_backbone().load_model().state_dict()
                for k, v in pl_module.model.state_dict().items():
                    torch.testing.assert_close(v, base[k], rtol=0, atol=0)
                assert all(not s for s in trainer.optimizers[0].state.values())
                self.checked = True

    loop = Check(rounds=2, chunk_size=5, reset_to_base=True)
    _, model = _fit(tmp_path, loop)
    assert loop.checked
    base = micro_backbone().load_model().state_dict()
    assert any(not torch.equal(v, base[k]) for k, v in model.model.state_dict().items())  # round 1 trained


def test_resume_after_a_kill_mid_e_step_recomputes_only_missing_chunks(tmp_path):
    straight = Toy(rounds=3, chunk_size=2)
    _fit(tmp_path / "a", straight)
    killed = Toy(rounds=3, chunk_size=2, fail_at=(2, 1))
    with pytest.raises(Killed):
        _fit(tmp_path / "b", killed)
    assert (killed.dir / "round_2" / "chunk_00000.jsonl").exists()
    assert not (killed.dir / "round_2" / "train.jsonl").exists()
    resumed = Toy(rounds=3, chunk_size=2)
    trainer, _ = _fit(tmp_path / "b", resumed, ckpt_path=killed.dir / "last.ckpt")
    assert resumed.calls == [(2, 1), (2, 2)]  # chunk 0 of round 2 was on disk
    assert resumed.epoch_rows == [5] and trainer.current_epoch == 3
    for r in (1, 2):
        a = read_jsonl(straight.dir / f"round_{r}" / "train.jsonl")
        assert read_jsonl(resumed.dir / f"round_{r}" / "train.jsonl") == a
    assert resumed.dir == killed.dir
