"""DPO and SimPO objectives on a micro Llama: the loss from full logits, the reference (frozen copy, LoRA disabled,
cached), learning from pairs, and configs/objectives/{dpo,simpo}.yaml through the real CLI."""

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.nn import functional as F

from ltune.backbone import LoRA
from ltune.cli import main
from ltune.datamodules import EmbeddedTasks, PreferenceData
from ltune.objectives import DPO, SimPO
from tests.conftest import MICRO, micro_backbone

ROOT = Path(__file__).resolve().parents[2]
TRAINER = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip


def _batch(model, n=4):
    dm = PreferenceData(train=EmbeddedTasks(format="preference", n=n))
    dm.tokenizer = model.tokenizer
    dm.setup("fit")
    return dm.collate(dm.data["train"])


def _response_logps(model, batch, average=False):
    """Summed (or mean) response log-probs from the full logits, float64: an independent path."""
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits[:, :-1].double()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    lp = torch.gather(F.log_softmax(logits, -1), 2, labels.clamp_min(0)[..., None])[..., 0] * mask
    return lp.sum(-1) / (mask.sum(-1) if average else 1)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_from_full_logits_and_ln2_at_the_start(loss_type):
    """At the start the policy is the reference: DPO's loss is ln 2, IPO's (1 / (2 beta))^2; after a change of the
    weights the loss is the formula on float64 log-probs of the policy and the (frozen) reference."""
    model = DPO(backbone=micro_backbone(), beta=0.5, loss_type=loss_type)
    model.configure_model()
    batch = _batch(model, n=5)
    loss, m = model.forward_loss(batch)
    assert loss.item() == pytest.approx(math.log(2) if loss_type == "sigmoid" else 1.0, rel=1e-5)
    assert m["rewards/margins"].item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    loss, m = model.forward_loss(batch)
    pol, ref = _response_logps(model.model, batch), _response_logps(model._frozen_reference[0], batch)
    s = pol - ref
    if loss_type == "sigmoid":
        expect = -F.logsigmoid(0.5 * (s[:5] - s[5:])).mean()
    else:
        n = (batch["labels"][:, 1:] != -100).sum(-1)
        expect = ((s[:5] / n[:5] - s[5:] / n[5:] - 1.0) ** 2).mean()
    assert loss.item() == pytest.approx(expect.item(), rel=1e-4)
    assert m["logps/chosen"].item() == pytest.approx(pol[:5].mean().item(), rel=1e-4)


def test_lora_reference_is_the_adapter_disabled_policy():
    model = DPO(backbone=micro_backbone(lora=LoRA(r=4, alpha=8, dropout=0.0)))
    model.configure_model()
    assert not model._frozen_reference
    batch = _batch(model)
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05 * torch.randn_like(p))
    loss, _ = model.forward_loss(batch)
    pol = _response_logps(model.model, batch)
    with model.model.disable_adapter():
        ref = _response_logps(model.model, batch)
    s = pol - ref
    assert loss.item() == pytest.approx(-F.logsigmoid(0.1 * (s[:4] - s[4:])).mean().item(), rel=1e-4)
    assert abs(s).max() > 1e-3  # the adapter moved the policy away from its reference


def test_simpo_loss_from_full_logits():
    model = SimPO(backbone=micro_backbone(), beta=2.0, gamma=0.5)
    model.configure_model()
    batch = _batch(model, n=5)
    loss, m = model.forward_loss(batch)
    avg = _response_logps(model.model, batch, average=True)
    assert loss.item() == pytest.approx(-F.logsigmoid(2.0 * (avg[:5] - avg[5:]) - 0.5).mean().item(), rel=1e-4)
    assert m["logps/chosen"].item() == pytest.approx(avg[:5].mean().item(), rel=1e-4)


def _fit(model, tmp_path, steps=3, rows=None):
    rows = rows or EmbeddedTasks(format="preference", n=8, categories=["compare"])
    dm = PreferenceData(train=rows, val=rows, batch_size=4, seed=0)
    trainer = L.Trainer(max_steps=steps, default_root_dir=tmp_path, check_val_every_n_epoch=None,
                        val_check_interval=steps, **TRAINER)  # fmt: skip
    trainer.fit(model, dm)
    return trainer


def test_cached_reference_gives_the_live_loss_and_is_reused(tmp_path, caplog):
    """Same seed, same data: the precomputed run's training losses and validation metrics equal the live run's; the
    cache file holds every train and val pair; a second run reads it without recomputing; the step runs one model."""
    cache = tmp_path / "cache"
    runs = {}
    for precompute in (False, True):
        L.seed_everything(0)
        model = DPO(backbone=micro_backbone(), beta=0.5, precompute_ref_log_probs=precompute, cache_dir=str(cache),
                    optimizer=lambda p: torch.optim.SGD(p, lr=0.5))  # fmt: skip
        losses = []
        model.on_train_batch_end = lambda out, *a, losses=losses: losses.append(out["loss"].item())
        trainer = _fit(model, tmp_path / str(precompute))
        runs[precompute] = (losses, trainer.callback_metrics["val/loss"].item(), model)
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5)
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-5)
    assert len(set(runs[True][0])) == 3  # the policy moved, so the losses differ step to step
    assert not runs[True][2]._frozen_reference and runs[False][2]._frozen_reference
    (file,) = cache.glob("*.json")
    assert len(json.loads(file.read_text())["pairs"]) == 8  # train and val are the same 8 pairs here
    mtime = file.stat().st_mtime_ns
    L.seed_everything(0)
    model = DPO(backbone=micro_backbone(), beta=0.5, precompute_ref_log_probs=True, cache_dir=str(cache))
    with caplog.at_level("INFO", logger="ltune.objectives.dpo"):
        _fit(model, tmp_path / "again", steps=1)
    assert "read from" in caplog.text and file.stat().st_mtime_ns == mtime
    L.seed_everything(0)  # other pairs: another file
    other = EmbeddedTasks(format="preference", n=8, categories=["add"])
    _fit(DPO(backbone=micro_backbone(), precompute_ref_log_probs=True, cache_dir=str(cache)), tmp_path / "o", 1, other)
    assert len(list(cache.glob("*.json"))) == 2


@pytest.mark.parametrize("cls", [DPO, SimPO])
def test_learns_to_prefer_the_chosen_responses(cls, tmp_path):
    model = cls(backbone=micro_backbone(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    rows = EmbeddedTasks(format="preference", n=8, categories=["compare"])
    dm = PreferenceData(train=rows, val=rows, batch_size=8)
    trainer = L.Trainer(**TRAINER)
    trainer.validate(model, datamodule=dm, verbose=False)
    before = {k: trainer.callback_metrics[f"val/{k}"].item() for k in ("loss", "rewards/margins")}
    trainer = L.Trainer(max_steps=30, **TRAINER)
    trainer.fit(model, dm)
    trainer.validate(model, datamodule=dm, verbose=False)
    after = {k: trainer.callback_metrics[f"val/{k}"].item() for k in ("loss", "rewards/margins", "rewards/accuracies")}
    assert after["loss"] < before["loss"] - 0.1 and after["rewards/margins"] > before["rewards/margins"]
    assert after["rewards/accuracies"] >= 0.75


@pytest.mark.parametrize("config,extra", [("dpo", []), ("dpo", ["--model.init_args.precompute_ref_log_probs=true",
                                          "--model.init_args.loss_type=ipo", "--trainer.default_root_dir=out"]),
                                          ("simpo", [])])  # fmt: skip
def test_config_runs_through_the_cli(config, extra, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(ROOT / f"configs/objectives/{config}.yaml"), *MICRO, "--trainer.max_steps=4",
          "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
          "--data.init_args.train.init_args.n=32", "--data.init_args.val.init_args.n=8",
          "--data.init_args.eval_prompts.init_args.n=4", "--data.init_args.batch_size=4", *extra])  # fmt: skip
    assert "val/rewards/accuracies" in capsys.readouterr().out  # printed by validate_around_fit
    root = tmp_path / ("out" if extra else "")  # --trainer.default_root_dir moves the reference cache too
    with open(root / f"runs/{config}/version_0/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("train/loss", "train/rewards/margins", "train/logps/chosen", "val/rewards/accuracies"):
        assert any(r.get(key) for r in rows), key
    assert bool(list((root / "runs/reference_cache").glob("*.json"))) == bool(extra)


def test_a_list_of_loss_types_trains(tmp_path):
    """MPO's mix, ``[sigmoid, bco_pair, sft]`` weighted ``[0.8, 0.2, 1.0]``: at the start (policy = reference) the loss
    is 0.8 ln 2 + 0.2 (2 ln 2) + the chosen responses' token-mean NLL from the full logits; a few steps lower it."""
    kw = dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0])
    model = DPO(backbone=micro_backbone(), **kw)
    model.configure_model()
    batch = _batch(model, n=5)
    loss, m = model.forward_loss(batch)
    logits = model.model(batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    labels = batch["labels"][:5, 1:]
    lp = torch.gather(F.log_softmax(logits[:5, :-1].double(), -1), 2, labels.clamp_min(0)[..., None])[..., 0]
    nll = -lp[labels != -100].mean()
    assert loss.item() == pytest.approx(1.2 * math.log(2) + nll.item(), rel=1e-5)
    assert m["rewards/margins"].item() == pytest.approx(0.0, abs=1e-5)
    L.seed_everything(0)
    model = DPO(backbone=micro_backbone(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2), **kw)
    losses = []
    model.on_train_batch_end = lambda out, *a: losses.append(out["loss"].item())
    _fit(model, tmp_path, steps=6)
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]


def test_loss_type_errors_are_raised_at_construction():
    with pytest.raises(ValueError, match="'nope' is not one of"):
        DPO(loss_type="nope")
    with pytest.raises(ValueError, match="loss_weights has 1 weights for the 2"):
        DPO(loss_type=["sigmoid", "sft"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="exo_pair"):
        DPO(loss_type="exo_pair")


def test_the_cli_parses_a_list_of_loss_types(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["fit", "--config", str(ROOT / "configs/objectives/dpo.yaml"), *MICRO]
    with pytest.raises(SystemExit) as e:
        main([*base, "--model.init_args.loss_type=[sigmoid,bco_pair,sft]",
              "--model.init_args.loss_weights=[0.8,0.2,1.0]", "--print_config"])  # fmt: skip
    assert e.value.code in (0, None)
    init = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert init["loss_type"] == ["sigmoid", "bco_pair", "sft"] and init["loss_weights"] == [0.8, 0.2, 1.0]
    with pytest.raises(SystemExit, match="loss_type"):  # not a name of TRL's: refused while parsing
        main([*base, "--model.init_args.loss_type=[sigmoid,nope]", "--print_config"])
    with pytest.raises(SystemExit, match="^ltune fit: config: "):  # refused by DPO before anything loads
        main([*base, "--model.init_args.loss_type=[sigmoid,bco_pair,sft]", "--model.init_args.loss_weights=[0.8,0.2]"])
