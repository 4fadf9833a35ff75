"""Checkpoints sized by what trains (ltune/objectives/checkpoint.py): a LoRA run's checkpoint leaves the frozen base
out, resumes as the uninterrupted run, loads for export, and refuses another base model with one line."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from ltune.backbone import Backbone, LoRA
from ltune.datamodules import EmbeddedTasks, InstructionData
from ltune.objectives import DPO, GRPO, SFT, CheckpointMismatch, Objective
from tests.conftest import micro_backbone


def _base(folder, seed: int) -> str:
    """A small Llama saved as a Hugging Face folder (a real model's stand-in: it reloads the same from disk)."""
    model = SFT(backbone=micro_backbone())
    model.configure_model()
    with torch.no_grad():  # tiny's init is the run's seed: shift the weights so that each seed is another base
        for p in model.model.parameters():
            p.add_(seed * 1e-3)
    return str(model.export(str(folder)))


def _fit(path: str, root, steps: int, ckpt: str | None = None, every: int | None = None, dropout: float = 0.1):
    L.seed_everything(0)
    model = SFT(backbone=Backbone(path, lora=LoRA(r=4, dropout=dropout)),
                optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))  # fmt: skip
    data = InstructionData(train=EmbeddedTasks(n=64), batch_size=4, seed=0)
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    saver = ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1) if every else None
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=saver is not None,
                        callbacks=[Record(), *([saver] if saver else [])])  # fmt: skip
    trainer.fit(model, data, ckpt_path=ckpt, weights_only=False if ckpt else None)
    return model, losses


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.model.named_parameters() if p.requires_grad}


def test_a_lora_checkpoint_holds_what_trains_and_resumes_as_the_uninterrupted_run(tmp_path):
    path = _base(tmp_path / "base", seed=1)
    straight, losses = _fit(path, tmp_path / "a", steps=4)
    _, first = _fit(path, tmp_path / "b", steps=2, every=2)
    (ckpt,) = (tmp_path / "b").glob("*.ckpt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    frozen = [n for n, p in straight.model.named_parameters(remove_duplicate=False) if not p.requires_grad]
    assert frozen and not any(f"model.{n}" in saved["state_dict"] for n in frozen)  # the base, tied embedding too
    assert {k.removeprefix("model.") for k in saved["state_dict"]} >= set(_trainable(straight))
    assert sorted(saved["ltune_frozen"]["keys"]) == sorted(f"model.{n}" for n in frozen)
    assert set(saved["ltune_rng"][0]) >= {"torch", "python", "numpy"}  # LoRA dropout (0.1) resumes where it was
    torch.save(saved["ltune_rng"], tmp_path / "rng.pt")  # `ltune fit --ckpt_path` loads with weights_only=True
    torch.load(tmp_path / "rng.pt", weights_only=True)
    resumed, second = _fit(path, tmp_path / "c", steps=4, ckpt=str(ckpt))
    torch.testing.assert_close(torch.tensor(first + second), torch.tensor(losses), rtol=1e-6, atol=0)
    for (name, a), b in zip(_trainable(straight).items(), _trainable(resumed).values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=name)
    loaded = Objective.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=False)  # `ltune export`
    for name, a in _trainable(loaded).items():
        torch.testing.assert_close(a, saved["state_dict"][f"model.{name}"])
    full = sum(t.numel() for t in straight.model.state_dict().values())
    kept = sum(t.numel() for t in saved["state_dict"].values())
    assert kept < 0.2 * full, (kept, full)


def test_a_checkpoint_of_another_base_model_is_refused_with_one_line(tmp_path):
    path, other = _base(tmp_path / "base", seed=1), _base(tmp_path / "other", seed=2)
    _fit(path, tmp_path / "b", steps=2, every=2)
    (ckpt,) = (tmp_path / "b").glob("*.ckpt")
    with pytest.raises(CheckpointMismatch, match="saved over another base model") as err:
        _fit(other, tmp_path / "c", steps=4, ckpt=str(ckpt))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "make", [lambda bb: DPO(backbone=bb), lambda bb: GRPO(backbone=bb, beta=0.04)], ids=["dpo", "grpo"]
)
def test_the_reference_copy_is_never_saved(tmp_path, make):
    """Full fine-tuning DPO (and GRPO with a KL) keeps a frozen reference copy out of the module tree: not in the
    checkpoint."""
    model = make(micro_backbone())
    model.configure_model()
    model.keep_reference_copy()
    assert model._frozen_reference
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(model.state_dict())  # tiny keeps everything; no reference keys
    assert all(not k.startswith("_frozen_reference") for k in checkpoint["state_dict"])
