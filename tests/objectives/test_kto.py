"""KTO objective on a micro Llama and UnpairedPreferenceData: the loss is the pure function on log-probs from the full
logits, the KL sequences (never a row's own completion, seeded, fixed, no gradient), paired rows unpaired, imbalanced
labels, the cached reference, and configs/objectives/kto.yaml through the real CLI (and its checkpoint reloaded)."""

import csv
import logging

import lightning as L
import pytest
import torch
from torch.nn import functional as F

from ltune.cli import main
from ltune.datamodules import EmbeddedTasks, UnpairedPreferenceData
from ltune.datamodules.sources import DataError
from ltune.datamodules.unpaired import kl_partners
from ltune.losses.kto import kto_kl, kto_loss
from ltune.objectives import KTO, Objective
from ltune.objectives.kto import paired_accuracy
from ltune.packing import row_slices
from tests.conftest import MICRO, ROOT, micro_backbone, quiet_trainer, trained_runs, write_jsonl


def _data(model=None, n=4, seed=0, **kwargs):
    dm = UnpairedPreferenceData(train=EmbeddedTasks(format="preference", n=n), seed=seed, **kwargs)
    dm.tokenizer = model.tokenizer if model else micro_backbone().tokenizer
    dm.setup("fit")
    return dm


def _full_logps(model, ids, mask, labels):
    """Summed completion log-probs from the full logits, float64: an independent path."""
    logits = model(ids, attention_mask=mask, use_cache=False).logits[:, :-1].double()
    target = labels[:, 1:]
    lp = torch.gather(F.log_softmax(logits, -1), 2, target.clamp_min(0)[..., None])[..., 0] * (target != -100)
    return lp.sum(-1)


@pytest.mark.parametrize("loss_type,share_prompt", [("kto", True), ("kto", False), ("apo_zero_unpaired", True)])
def test_loss_is_the_pure_function_on_full_logit_logps(loss_type, share_prompt):
    """At the start the policy is its reference: every log-ratio and z0 are 0, the loss 1 - sigmoid(0) = 0.5. After
    a change of the weights the loss is ``kto_loss`` on float64 log-probs of the policy and the frozen reference."""
    model = KTO(backbone=micro_backbone(), beta=0.5, desirable_weight=1.3, loss_type=loss_type,
                share_prompt=share_prompt)  # fmt: skip
    model.configure_model()
    dm = _data(model, n=3)
    batch = dm.collate(dm.data["train"])
    assert batch["label"].tolist() == [True] * 3 + [False] * 3
    loss, m = model.forward_loss(batch)
    assert loss.item() == pytest.approx((1.3 * 3 + 3) / 6 * 0.5, rel=1e-5) and m["kl"].item() == pytest.approx(0)
    torch.manual_seed(2)  # a perturbation under which z0 > 0 (not clamped)
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss, m = model.forward_loss(batch)
    loss.backward()
    policy, ref = model.model, model._frozen_reference[0]
    main_ = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    kl_ = (batch["KL_input_ids"], batch["KL_attention_mask"], batch["KL_labels"])
    with torch.no_grad():
        pol, ref_logps = _full_logps(policy, *main_), _full_logps(ref, *main_)
        z0 = kto_kl(_full_logps(policy, *kl_), _full_logps(ref, *kl_)) if loss_type == "kto" else None
    # the pure function on those log-probs (one "token" per row carrying its summed log-prob)
    expect, em = kto_loss(pol[:, None], torch.ones(6, 1), ref_logps, batch["label"], z0, beta=0.5,
                          desirable_weight=1.3, loss_type=loss_type)  # fmt: skip
    assert loss.item() == pytest.approx(expect.item(), rel=1e-4)
    assert loss_type != "kto" or z0.item() > 1.0
    for key, value in em.items():
        assert m[key].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6), key
    grads = [p.grad for p in model.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("share,row_min", [(True, 10**6), (True, 1), (False, 1)])
def test_kl_continued_or_whole_rows_batched_or_alone_agree(share, row_min, monkeypatch):
    """KL sequences continued off their rows' KV cache (share_prompt) or run whole in a second forward (both without
    gradient), and rows run as one padded batch or one at a time unpadded (``ROW_MIN_TOKENS`` 1: the micro rows
    count as long), give the batched whole-sequence path's loss, z0 and gradients: z0 enters as a constant."""
    import ltune.packing

    runs = {}
    for key, (share_, row_min_) in {"plain": (False, 10**6), "tried": (share, row_min)}.items():
        monkeypatch.setattr(ltune.packing, "ROW_MIN_TOKENS", row_min_)
        torch.manual_seed(2)  # a perturbation under which z0 > 0
        model = KTO(backbone=micro_backbone(), share_prompt=share_)
        model.configure_model()
        with torch.no_grad():
            for p in model.model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        dm = _data(model, n=3)
        batch = dm.collate(dm.data["train"])
        lengths = batch["attention_mask"].sum(1)
        assert len(ltune.packing.row_slices(model.model, batch["attention_mask"])) == (6 if row_min_ == 1 else 1)
        assert lengths.min() < lengths.max()  # padded rows
        loss, m = model.forward_loss(batch)
        loss.backward()
        assert m["kl"].item() > 0  # z0 is not clamped to 0 here: it shapes the loss
        runs[key] = (loss.item(), m["kl"].item(), [p.grad.clone() for p in model.model.parameters()])
    assert runs["tried"][0] == pytest.approx(runs["plain"][0], rel=1e-5)
    assert runs["tried"][1] == pytest.approx(runs["plain"][1], rel=1e-5)
    for a, b in zip(runs["tried"][2], runs["plain"][2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_rows_run_alone_when_long_and_unequal_on_cpu():
    model = micro_backbone().load_model()
    mask = lambda *lengths: torch.tensor([[1] * n + [0] * (max(lengths) - n) for n in lengths])  # noqa: E731
    assert row_slices(model, mask(300, 256)) == [slice(0, 1), slice(1, 2)]
    assert row_slices(model, mask(300, 255)) == [slice(0, 2)]  # a short row: the batch stays whole
    assert row_slices(model, mask(300, 300)) == [slice(0, 2)]  # no padding: nothing to save


def test_kl_sequences_pair_each_prompt_with_another_rows_completion():
    """The KL sequence of a row is its own prompt and another row's completion; every completion is used once, by a
    seeded cycle that depends on the seed only (not on batch size or order), and the same on every setup."""
    a, b, other = _data(n=6), _data(n=6), _data(n=6, seed=1)
    rows = a.data["train"]
    tok = a.tokenizer
    completions = [trained_runs(tok, r) for r in rows]
    kl_completions = [trained_runs(tok, {"input_ids": r["KL_input_ids"], "labels": r["KL_labels"]}) for r in rows]
    assert sorted(map(str, kl_completions)) == sorted(map(str, completions))  # a permutation of the completions
    assert all(k != c for k, c in zip(kl_completions, completions))  # never its own
    for r in rows:  # the prompt part is the row's own
        start = next(i for i, t in enumerate(r["labels"]) if t != -100)
        assert r["KL_input_ids"][:start] == r["input_ids"][:start] and r["KL_labels"][:start] == [-100] * start
    assert [r["KL_input_ids"] for r in rows] == [r["KL_input_ids"] for r in b.data["train"]]
    assert [r["KL_input_ids"] for r in rows] != [r["KL_input_ids"] for r in other.data["train"]]
    for n in (2, 3, 10, 101):
        partners = kl_partners(n, seed=7, split="train")
        assert sorted(partners) == list(range(n)) and all(j != i for i, j in enumerate(partners))
        assert partners == kl_partners(n, seed=7, split="train")
    with pytest.raises(DataError, match="at least 2 rows"):
        kl_partners(1, seed=0, split="train")
    batch = a.collate(rows[2:5])  # any batch of rows carries the KL sequences fixed at setup
    assert batch["KL_input_ids"][1, : len(rows[3]["KL_input_ids"])].tolist() == rows[3]["KL_input_ids"]


def test_paired_accuracy_counts_pairs_with_both_rows_and_ties_as_misses():
    rewards = {(0, True): 1.0, (0, False): 0.5, (1, True): -1.0, (1, False): 0.0, (2, True): 3.0,
               (3, True): 0.25, (3, False): 0.25, (4, False): 9.0}  # fmt: skip
    assert paired_accuracy(rewards) == pytest.approx(1 / 3)  # pairs 0, 1, 3; DPO's strict chosen > rejected
    assert paired_accuracy({(0, True): 1.0}) is None


def test_validation_scores_held_out_pairs_as_dpo_does():
    """Validation rows unpaired from preference pairs keep their pair id; val/rewards/accuracies is DPO's share of
    pairs whose chosen completion has the higher implicit reward, against float64 log-probs of the policy and the
    frozen reference, with batches that split pairs."""
    model = KTO(backbone=micro_backbone(), beta=0.5)
    model.configure_model()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    dm = _data(model, n=9)
    rows = dm.data["train"]
    assert sorted((r["pair"], r["label"]) for r in rows) == [(i, b) for i in range(9) for b in (False, True)]
    for start in range(0, len(rows), 4):  # batches of 4 rows: pairs split across batches
        with torch.no_grad():
            model.validation_step(dm.collate(rows[start : start + 4]), 0)
    batch = dm.collate(rows)
    main_ = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        reward = 0.5 * (_full_logps(model.model, *main_) - _full_logps(model._frozen_reference[0], *main_))
    by_pair = {(p, lab): r for p, lab, r in zip(batch["pair"].tolist(), batch["label"].tolist(), reward.tolist())}
    expect = sum(by_pair[(i, True)] > by_pair[(i, False)] for i in range(9)) / 9
    assert model._val_rewards.keys() == by_pair.keys()
    assert paired_accuracy(model._val_rewards) == pytest.approx(expect)
    assert 0 < expect < 1
    for key, value in by_pair.items():
        assert model._val_rewards[key] == pytest.approx(value, rel=1e-4, abs=1e-5)


def _setup(train, tok):
    dm = UnpairedPreferenceData(train=train)
    dm.tokenizer = tok
    dm.setup("fit")
    return dm


def test_paired_rows_are_unpaired_as_trl_does(tmp_path):
    """Conversational pairs with an implicit prompt (UltraFeedback's layout): every chosen response a desirable row,
    then every rejected one an undesirable row, on the shared prompt; a bad pair names its own source row."""
    tok = micro_backbone().tokenizer
    conv = lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]  # noqa: E731
    pairs = [{"chosen": conv(f"{i}+1?", f"{i + 1}"), "rejected": conv(f"{i}+1?", f"{i + 2}")} for i in range(3)]
    rows = _setup(write_jsonl(tmp_path / "pairs.jsonl", pairs), tok).data["train"]
    assert [r["label"] for r in rows] == [True] * 3 + [False] * 3
    assert [trained_runs(tok, r) for r in rows] == [[f"{c}</s>"] for c in (1, 2, 3, 2, 3, 4)]
    same = {"chosen": conv("1+1?", "2"), "rejected": conv("1+1?", "2")}
    bad = write_jsonl(tmp_path / "bad.jsonl", [pairs[0], same])
    with pytest.raises(DataError, match=r"bad.jsonl: row 2: fields 'chosen' and 'rejected' have the same response"):
        _setup(bad, tok)


def _fit(model, dm, tmp_path, steps=3):
    trainer = quiet_trainer(max_steps=steps, default_root_dir=tmp_path, check_val_every_n_epoch=None,
                            val_check_interval=steps)  # fmt: skip
    trainer.fit(model, dm)
    return trainer


def test_imbalanced_labels_train_and_warn(tmp_path, caplog):
    """3 desirable rows to 1: TRL's (and the paper's) warning; batches with one label only train, and validation
    leaves out the metrics of a label it never saw."""
    rows = [{"prompt": f"{i}+1?", "completion": f"{i + 1}", "label": i % 4 != 0} for i in range(16)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", [r for r in rows if r["label"]][:4])
    model = KTO(backbone=micro_backbone(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    dm = UnpairedPreferenceData(train=train, val=val, batch_size=2, seed=0)
    with caplog.at_level(logging.WARNING, logger="ltune.objectives.kto"):
        trainer = _fit(model, dm, tmp_path, steps=8)
    assert "12 desirable and 4 undesirable rows" in caplog.text and "desirable_weight in [0.333, 0.444]" in caplog.text
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["val/loss"]) and "val/rewards/chosen" in metrics
    assert "val/rewards/rejected" not in metrics and "val/rewards/margins" not in metrics
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ltune.objectives.kto"):
        _fit(KTO(backbone=micro_backbone(), desirable_weight=1 / 3 + 0.05), dm, tmp_path / "w", steps=1)
    assert "undesirable rows" not in caplog.text  # weights in the recommended range: no warning


def test_cached_reference_gives_the_live_loss(tmp_path):
    """precompute_ref_log_probs caches the reference log-probs of every row and of its KL sequence: same losses and
    validation metrics as the live reference; the step then runs the policy alone."""
    cache, runs = tmp_path / "cache", {}
    for precompute in (False, True):
        L.seed_everything(0)
        model = KTO(backbone=micro_backbone(), beta=0.5, precompute_ref_log_probs=precompute, cache_dir=str(cache),
                    optimizer=lambda p: torch.optim.SGD(p, lr=0.5))  # fmt: skip
        losses = []
        model.on_train_batch_end = lambda out, *a, losses=losses: losses.append(out["loss"].item())
        rows = EmbeddedTasks(format="preference", n=4, categories=["compare"])
        dm = UnpairedPreferenceData(train=rows, val=rows, batch_size=4, seed=0)
        trainer = _fit(model, dm, tmp_path / str(precompute))
        runs[precompute] = (losses, trainer.callback_metrics["val/kl"].item(), model)
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5) and len(set(runs[True][0])) == 3
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-5, abs=1e-7)
    assert not runs[True][2]._frozen_reference and len(list(cache.glob("*.json"))) == 1


def test_config_runs_through_the_cli_and_the_checkpoint_reloads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(ROOT / "configs/objectives/kto.yaml"), *MICRO, "--trainer.max_steps=4",
          "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
          "--data.init_args.train.init_args.n=16", "--data.init_args.val.init_args.n=4",
          "--data.init_args.eval_prompts.init_args.n=4", "--data.init_args.batch_size=4"])  # fmt: skip
    assert "val/rewards/margins" in capsys.readouterr().out  # printed by validate_around_fit
    run = tmp_path / "runs/kto/version_0"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in (
        "train/loss",
        "train/kl",
        "train/rewards/chosen",
        "train/logps/rejected",
        "val/rewards/margins",
        "val/rewards/accuracies",
    ):  # the held-out rows are unpaired pairs: scored pairwise too
        assert any(r.get(key) for r in rows), key
    ckpt = str(next((run / "checkpoints").glob("*.ckpt")))
    model = KTO.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)  # DPO's saved arguments too
    assert model.loss_type == "kto" and model.beta == 0.1 and model.desirable_weight == 1.0
    Objective.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)  # as `ltune export` loads it
