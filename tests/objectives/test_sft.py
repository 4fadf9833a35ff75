"""SFT objective on a micro Llama: the loss falls, trainable weights change, a NaN loss stops the run."""

import pytest
import torch

from ltune.backbone import LoRA
from ltune.datamodules import EmbeddedTasks, InstructionData
from ltune.objectives import SFT, NonFiniteLossError
from tests.conftest import micro_backbone, quiet_trainer


def _data(**kw):
    return InstructionData(train=EmbeddedTasks(n=64, categories=["add"]), batch_size=16, **kw)


@pytest.mark.parametrize("lora", [None, LoRA(r=4, alpha=8, dropout=0.0)])
def test_loss_falls_and_trainable_weights_change(lora):
    model = SFT(backbone=micro_backbone(lora=lora), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    dm = _data(val=EmbeddedTasks(n=32, split="val", categories=["add"]))
    trainer = quiet_trainer(max_steps=1, limit_train_batches=1, limit_val_batches=2)
    trainer.validate(model, datamodule=dm, verbose=False)
    before_loss = trainer.callback_metrics["val/loss"].item()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = quiet_trainer(max_steps=30, limit_val_batches=2, val_check_interval=30, check_val_every_n_epoch=None)
    trainer.fit(model, dm)
    after_loss = trainer.callback_metrics["val/loss"].item()
    # LoRA on a randomly initialised micro model learns slowly: ask for a clear fall, not the full model's 20%
    assert after_loss < (before_loss - 0.1 if lora else 0.8 * before_loss)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[n]), f"{n} did not change"
    assert all("lora" in n for n in before) if lora else len(before) > 10


class _NaNAfter(SFT):
    def forward_loss(self, batch):
        loss, metrics = super().forward_loss(batch)
        return (loss * float("nan") if self.global_step >= 2 else loss), metrics


def test_non_finite_loss_stops_the_run_before_stepping():
    model = _NaNAfter(backbone=micro_backbone())
    trainer = quiet_trainer(max_steps=10)
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* at global step 2"):
        trainer.fit(model, _data())
    assert trainer.global_step == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_exact_match_from_greedy_generation_counts_correct_answers():
    model = SFT(backbone=micro_backbone())
    model.configure_model()
    dm = InstructionData(eval_prompts=EmbeddedTasks(format="prompts", n=4, split="val"))
    dm.tokenizer = model.tokenizer
    dm.setup()
    batch = dm.collate(dm.data["eval"])
    model.generate_text = lambda ids, mask: [
        f"The answer is {a}." if i % 2 else "no" for i, a in enumerate(batch["answer"])
    ]
    model.eval_step(batch)
    assert model.exact_match.compute().item() == 0.5
