"""A token budget per batch (``batch_tokens``): rows packed best-fit-decreasing as TRL packs, batches that never pass
the budget, a seeded order per epoch, equal steps on every rank, mid-epoch resume, and a fit that steps on them."""

import random

import lightning as L
import pytest
import torch
from datasets import Dataset
from trl.data_utils import pack_dataset

from ltune import SFT
from ltune.datamodules import EmbeddedTasks, InstructionData, PreferenceData
from ltune.datamodules.batching import TokenBudgetSampler, row_tokens
from ltune.packing import best_fit
from tests.conftest import micro_backbone


def _naive_best_fit(sizes, capacity):
    """Best-fit decreasing written plainly: scan every bin for the tightest room."""
    bins, room = [], []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        fits = [b for b in range(len(bins)) if room[b] >= sizes[i]]
        if fits:
            b = min(fits, key=lambda b: (room[b], b))
            bins[b].append(i)
            room[b] -= sizes[i]
        else:
            bins.append([i])
            room.append(capacity - sizes[i])
    return bins


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_fit_equals_the_plain_algorithm_and_packs_as_trls_bfd(seed):
    rng = random.Random(seed)
    sizes = [min(4096, int(rng.lognormvariate(6, 1)) + 1) for _ in range(300)]
    bins = best_fit(sizes, 4096)
    assert bins == _naive_best_fit(sizes, 4096)
    assert sorted(i for b in bins for i in b) == list(range(len(sizes)))
    trl = pack_dataset(Dataset.from_dict({"input_ids": [[1] * n for n in sizes]}), 4096, strategy="bfd")
    assert sorted(sum(sizes[i] for i in b) for b in bins) == sorted(sum(r) for r in trl["seq_lengths"])


def test_batches_stay_within_the_budget_cover_each_row_once_and_shuffle_per_epoch():
    sizes = [5, 90, 40, 60, 33, 120, 7, 70, 50, 12, 80, 26]  # 120 is over the budget: a batch of its own
    s = TokenBudgetSampler(sizes, 1, 0, seed=3, budget=100)
    first = list(s)
    assert len(first) == len(s)
    assert sorted(i for b in first for i in b) == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in b) <= 100 for b in first if b != [5])
    s.set_epoch(1)
    second = list(s)
    assert second != first and sorted(map(sorted, second)) == sorted(map(sorted, first))  # same batches, new order
    again = TokenBudgetSampler(sizes, 1, 0, seed=3, budget=100)
    assert list(again) == first  # seeded


def test_ranks_step_equally_and_resume_mid_epoch():
    sizes = [30, 30, 30, 30, 30, 30, 30]  # 7 batches of one row at budget 40
    ranks = [list(TokenBudgetSampler(sizes, 2, r, seed=0, budget=40)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    assert {i for r in ranks for b in r for i in b} == set(range(7))  # one batch repeated to even the ranks
    s = TokenBudgetSampler(sizes, 2, 1, seed=0, budget=40)
    s.resume = (0, 3)
    assert list(s) == ranks[1][3:]
    assert list(s) == ranks[1]  # the skip applies once


def test_a_fit_steps_on_budgeted_batches(tokenizer):
    dm = InstructionData(train=EmbeddedTasks(n=24), batch_tokens=160, batch_size=2)
    seen = []

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch["attention_mask"].sum(1).tolist())

    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Watch()],
    )
    trainer.fit(SFT(backbone=micro_backbone()), dm)
    sizes = [row_tokens(e) for e in dm.data["train"]]
    assert sum(len(b) for b in seen) == 24 and len(seen) == len(best_fit(sizes, 160))
    assert all(sum(b) <= 160 for b in seen) and max(len(b) for b in seen) > 2  # rows per step follow the budget
    assert trainer.global_step == len(seen)


def test_a_pairs_tokens_count_both_rows(tokenizer):
    dm = PreferenceData(train=EmbeddedTasks(format="preference", n=2))
    dm.tokenizer = tokenizer
    dm.setup("fit")
    ex = dm.data["train"][0]
    chosen, rejected = ex["input_ids"]
    assert row_tokens(ex) == len(chosen) + len(rejected) > len(chosen)
    with pytest.raises(ValueError, match="batch_tokens=0"):
        InstructionData(batch_tokens=0)


def test_dpo_precomputes_its_reference_over_budgeted_batches(tmp_path):
    """The reference pass reads the budgeted loader's rows one by one: every pair gets its log-probs, equal to the live
    reference's (a batch of index lists used to fail there)."""
    from ltune.objectives import DPO
    from ltune.objectives.reference_cache import pair_keys

    dm = PreferenceData(train=EmbeddedTasks(format="preference", n=8), batch_tokens=400, val=None)
    model = DPO(backbone=micro_backbone(), precompute_ref_log_probs=True, cache_dir=str(tmp_path))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, dm)
    rows = dm.train_dataloader().dataset.rows
    batch = dm.collate(list(rows))
    assert len(rows) == 8 and all(k in model.ref_cache for k in pair_keys(batch))
    cached = model.reference_logps(batch)
    fresh = DPO(backbone=micro_backbone())  # the same initial weights
    fresh.configure_model()
    for got, want in zip(cached, fresh.live_reference(batch)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
