"""ReST-EM keeps the best round: a scripted held-out metric per round on a micro model; the model (and HFExport's
folder, whatever the callback order) ends with the best round's weights, ``rounds.json`` records ``best_round``,
``early_stop_on_regression`` stops at the first fall, and the best round survives a kill and a resume."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM

from ltune import SFT
from ltune.callbacks import HFExport, ReSTEM
from ltune.callbacks.best_round import BestRound, trainable_state
from ltune.datamodules import EmbeddedTasks, InstructionData
from tests.conftest import micro_backbone


class Killed(Exception):
    pass


class Scripted(SFT):
    """SFT whose validation logs a scripted ``val/exact_match`` per epoch and snapshots the weights it was given."""

    def __init__(self, metrics: list[float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.metrics, self.snapshots = metrics, {}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log("val/exact_match", self.metrics[self.current_epoch])
        self.snapshots[self.current_epoch] = trainable_state(self.model)


class Loop(ReSTEM):
    """ReST-EM with a fixed E-step (every problem 'solved' once), so rounds differ only by the scripted metric."""

    def __init__(self, fail_round: int | None = None, **kwargs) -> None:
        super().__init__(problems="unused.jsonl", chunk_size=3, **kwargs)
        self.fail_round = fail_round

    def e_step_items(self, trainer, pl_module, round):
        return [{"prompt": f"What is {i}+1?", "answer": str(i + 1), "category": "add"} for i in range(6)]

    def e_step(self, trainer, pl_module, round, items):
        if round == self.fail_round:
            raise Killed("simulated kill in the middle of an E-step")
        return [{**it, "samples": 1, "correct": 1, "solutions": [f"The answer is {it['answer']}."]} for it in items]


def _fit(tmp_path, loop, metrics, ckpt_path=None):
    torch.manual_seed(0)
    model = Scripted(metrics, backbone=micro_backbone(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    data = InstructionData(val=EmbeddedTasks(n=4, split="val"), max_length=64, batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu", logger=L.pytorch.loggers.CSVLogger(tmp_path, name="run"), num_sanity_val_steps=0,
        callbacks=[HFExport(), loop],  # HFExport first: the best weights are back before any on_train_end
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data, ckpt_path=ckpt_path, weights_only=False)
    return trainer, model


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history(loop) -> list[dict]:
    return json.loads((loop.dir / "rounds.json").read_text())


def test_the_model_and_the_export_end_with_the_best_round(tmp_path):
    loop = Loop(rounds=3)
    trainer, model = _fit(tmp_path, loop, [0.2, 0.5, 0.3])
    history = _history(loop)
    assert [h["held_out/exact_match"] for h in history] == pytest.approx([0.2, 0.5, 0.3])
    assert [h["best_round"] for h in history] == [0, 1, 1]
    final = trainable_state(model.model)
    assert _equal(final, model.snapshots[1]) and not _equal(final, model.snapshots[2])
    exported = AutoModelForCausalLM.from_pretrained(trainer.log_dir + "/hf").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in model.snapshots[1].items())
    assert [p.relative_to(loop.dir).as_posix() for p in loop.dir.rglob("*.pt")] == ["round_1/model.pt"]


def test_without_keep_best_the_last_round_stays(tmp_path):
    loop = Loop(rounds=3, keep_best=False)
    _, model = _fit(tmp_path, loop, [0.2, 0.5, 0.3])
    assert _equal(trainable_state(model.model), model.snapshots[2])
    assert "best_round" not in _history(loop)[-1] and not list(loop.dir.rglob("*.pt"))


def test_early_stop_on_regression_ends_the_loop_at_the_first_fall(tmp_path):
    loop = Loop(rounds=4, early_stop_on_regression=True)
    trainer, model = _fit(tmp_path, loop, [0.2, 0.5, 0.5, 0.3, 0.9])  # a tie is no fall; round 3 falls
    history = _history(loop)
    assert [h["round"] for h in history] == [0, 1, 2, 3] and trainer.current_epoch == 4
    assert [h.get("early_stop") for h in history] == [None, None, None, 1.0]
    assert [h["best_round"] for h in history] == [0, 1, 1, 1]  # the tie keeps the earlier round
    assert _equal(trainable_state(model.model), model.snapshots[1])


def test_early_stop_stops_before_the_next_e_step(tmp_path):
    loop = Loop(rounds=4, early_stop_on_regression=True)
    trainer, model = _fit(tmp_path, loop, [0.5, 0.4, 0.9, 0.9])
    assert trainer.current_epoch == 2 and [h["round"] for h in _history(loop)] == [0, 1]
    assert not (loop.dir / "round_2").exists()  # no E-step after the fall
    assert _equal(trainable_state(model.model), model.snapshots[0])


def test_the_best_round_survives_a_kill_and_a_resume(tmp_path):
    straight = Loop(rounds=3)
    _, reference = _fit(tmp_path / "a", straight, [0.2, 0.5, 0.3])
    killed = Loop(rounds=3, fail_round=2)  # the E-step after round 1's M-step (the best so far) dies
    with pytest.raises(Killed):
        _fit(tmp_path / "b", killed, [0.2, 0.5, 0.3])
    state = torch.load(killed.dir / "last.ckpt", weights_only=False)["callbacks"]["Loop"]["best"]
    assert (state["round"], state["value"]) == (1, pytest.approx(0.5))
    resumed = Loop(rounds=3)  # knows nothing but what the checkpoint holds
    _, model = _fit(tmp_path / "b", resumed, [0.2, 0.5, 0.3], ckpt_path=killed.dir / "last.ckpt")
    assert sorted(model.snapshots) == [2]  # only round 2 trained after the resume
    assert _equal(trainable_state(model.model), reference.snapshots[1])
    assert _history(resumed) == _history(straight)


def test_best_round_compares_by_mode():
    best = BestRound(mode="min")
    assert best.better(3.0) and not best.worse(3.0)
    best.round, best.value = 0, 2.0
    assert best.better(1.0) and best.worse(2.5) and not best.worse(2.0) and not best.better(2.0)
    with pytest.raises(ValueError):
        BestRound(mode="best")
