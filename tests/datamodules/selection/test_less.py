"""LESS: batched per-example LoRA gradients against one backward per row, the Rademacher projection, the Adam
preconditioning formula on one row by hand, the lr-weighted subtask-mean-max aggregation by hand, and the two
commands (warmup with per-epoch checkpoints, then selection) through the real CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ltune.backbone import LoRA
from ltune.cli import main
from ltune.datamodules import LESS, EmbeddedTasks, InstructionData
from ltune.datamodules.batching import pad_right
from ltune.datamodules.selection.less import CountSketchProjector, RademacherProjector, influence, per_example_grads
from ltune.forward import completion_logprobs
from tests.conftest import ROOT, micro_backbone, write_jsonl
from tests.datamodules.selection.conftest import SHRINK

ROWS = [{"prompt": f"What is {i}+{i + 3}?", "response": f"{i}+{i + 3}={2 * i + 3}. The answer is {2 * i + 3}.",
         "category": "add" if i % 2 else "sub"} for i in range(7)]  # fmt: skip


def lora_model():
    bb = micro_backbone(lora=LoRA(r=4, alpha=8, dropout=0.0))
    model = bb.load_model().eval()
    with torch.no_grad():  # LoRA B starts at zero; make both factors matter
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.1)
    return bb, model


def encode(tok, rows):
    fmt = InstructionData(max_length=128)
    fmt.tokenizer, fmt._truncated = tok, 0
    return [fmt.encode(r) for r in rows]


def batch_of(tok, enc):
    ids, mask = pad_right([e["input_ids"] for e in enc], tok.pad_token_id)
    return {"input_ids": ids, "attention_mask": mask, "labels": pad_right([e["labels"] for e in enc], -100)[0]}


def loop_grad(model, names, batch1) -> torch.Tensor:
    params = dict(model.named_parameters())
    lp = completion_logprobs(model, batch1["input_ids"], batch1["attention_mask"], batch1["labels"]).logprobs
    loss = -lp.sum() / (batch1["labels"][:, 1:] != -100).sum()
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return torch.cat([g.flatten() for g in grads])


def test_batched_per_example_grads_equal_one_backward_per_row():
    bb, model = lora_model()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    enc = encode(bb.tokenizer, ROWS)
    got = per_example_grads(model, batch_of(bb.tokenizer, enc), names)
    assert got.shape == (7, sum(p.numel() for n, p in model.named_parameters() if p.requires_grad))
    for i in range(7):
        torch.testing.assert_close(got[i], loop_grad(model, names, batch_of(bb.tokenizer, [enc[i]])), rtol=1e-4,
                                   atol=1e-6)  # fmt: skip


def test_rademacher_projection_is_seeded_blockwise_and_plus_minus_one():
    p, q = RademacherProjector(16, seed=3, block=5), RademacherProjector(16, seed=3, block=5)
    x = torch.randn(4, 12)
    torch.testing.assert_close(p(x), q(x))  # the same matrix in another process / checkpoint / rank
    r = torch.cat([p.matrix_block(s, min(5, 12 - s), x.device) for s in range(0, 12, 5)])
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(p(x), x @ r / 4.0)
    assert not torch.equal(RademacherProjector(16, seed=4, block=5)(x), p(x))


def test_count_sketch_is_a_seeded_sparse_signed_matrix():
    p = CountSketchProjector(8, seed=3)
    x = torch.randn(4, 30, dtype=torch.float64)
    bucket, sign = p.hash(30, x.device)
    dense = torch.zeros(30, 8, dtype=torch.float64)
    dense[torch.arange(30), bucket] = sign.double()  # one signed 1 per input coordinate
    torch.testing.assert_close(p(x).double(), x @ dense, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(CountSketchProjector(8, seed=3)(x), p(x))  # another process / checkpoint / rank
    assert not torch.equal(CountSketchProjector(8, seed=4)(x), p(x))


def test_count_sketch_keeps_inner_products_like_the_dense_projection():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 20_000, generator=g)
    y = 0.6 * x + 0.8 * torch.randn(64, 20_000, generator=g)  # cosine 0.6 with x
    cos = torch.nn.functional.cosine_similarity
    for proj in (CountSketchProjector(4096, seed=1), RademacherProjector(4096, seed=1)):
        got = cos(proj(x), proj(y))
        assert abs(got.mean().item() - 0.6) < 0.01 and got.std().item() < 0.03, type(proj).__name__


def test_influence_is_the_lr_weighted_subtask_mean_max_by_hand():
    t1, t2 = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])
    v = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # val rows 0, 1 in subtask 0; row 2 in subtask 1
    # w = (3/4, 1/4). S = 3/4 t1 v^T + 1/4 t2 v^T:
    # row 0: [3/4, 1/4, 3/4*.6 + 1/4*.8 = .65] -> subtask means [0.5, 0.65] -> 0.65
    # row 1: [1/4, 3/4, 3/4*.8 + 1/4*.6 = .75] -> [0.5, 0.75] -> 0.75
    got = influence([t1, t2], [v, v], np.array([3e-5, 1e-5]), np.array([0, 0, 1]))
    np.testing.assert_allclose(got, [0.65, 0.75])


def test_adam_preconditioned_feature_of_one_row_by_hand(tmp_path):
    bb, model = lora_model()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    sel = LESS(InstructionData(train=write_jsonl(tmp_path / "p.jsonl", ROWS), max_length=128), target="unused.jsonl",
               checkpoints=str(tmp_path), scorer=bb, projection_dim=32, progress=False, score_batch_size=3)  # fmt: skip
    sel.tokenizer = bb.tokenizer
    g = torch.Generator().manual_seed(0)
    m = {n: torch.randn(p.shape, generator=g) * 1e-3 for n, p in model.named_parameters() if p.requires_grad}
    v = {n: torch.rand(p.shape, generator=g) * 1e-5 for n, p in model.named_parameters() if p.requires_grad}
    enc = encode(bb.tokenizer, ROWS)
    feats = sel.features(model, enc, [f"row {i}" for i in range(7)], {"exp_avg": m, "exp_avg_sq": v}, "t")
    plain = sel.features(model, enc, [f"row {i}" for i in range(7)], None, "t")
    grad = loop_grad(model, names, batch_of(bb.tokenizer, [enc[5]])).double()
    mm, vv = (torch.cat([d[n].flatten() for n in names]).double() for d in (m, v))
    gamma = (0.9 * mm + 0.1 * grad) / torch.sqrt(0.999 * vv + 0.001 * grad**2 + 1e-8)
    proj = RademacherProjector(32, seed=0)
    for got, vec in ((feats[5], gamma), (plain[5], grad)):
        expect = torch.nn.functional.normalize(proj(vec[None].float()), dim=1)[0]
        np.testing.assert_allclose(got, expect.numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("projection", ["rademacher", "count_sketch"])
def test_warmup_then_less_through_the_cli(tmp_path, monkeypatch, projection):
    monkeypatch.chdir(tmp_path)
    args = [a for a in SHRINK if "max_steps" not in a and "val_check" not in a]
    main(["fit", "--config", str(ROOT / "configs/selection/less_warmup.yaml"), *args, "--trainer.max_epochs=2",
          "--data.init_args.budget=8"])  # fmt: skip
    ckpts = sorted((tmp_path / "runs/less_warmup/version_0/less").glob("epoch_*.pt"))
    assert [p.name for p in ckpts] == ["epoch_0.pt", "epoch_1.pt"]
    c = torch.load(ckpts[1], weights_only=True)
    assert set(c["params"]) == set(c["exp_avg"]) == set(c["exp_avg_sq"]) and all("lora_" in n for n in c["params"])
    assert c["lr"] > 0 and (c["exp_avg_sq"][next(iter(c["params"]))] > 0).any()
    main(["select", "--config", str(ROOT / "configs/selection/less.yaml"), *args, "--output", "kept.jsonl",
          "--data.init_args.checkpoints=runs/less_warmup/version_0/less", "--data.init_args.projection_dim=64",
          "--data.init_args.target.init_args.n=6", f"--data.init_args.projection={projection}"])  # fmt: skip
    report = pd.read_csv(next(tmp_path.glob("runs/less/version_*/selection/selection.csv")))
    assert report["selected"].sum() == 3 and report["influence"].between(-1, 1).all()  # 5% of 60
    top = report.sort_values("influence", ascending=False, kind="stable")["index"][:3]
    assert sorted(top) == sorted(report.index[report["selected"]])


def test_the_score_cache_key_follows_the_target_rows_not_only_their_name(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt/epoch_0.pt").write_bytes(b"")  # the key reads the checkpoints' names, sizes and times only
    pool = InstructionData(train=write_jsonl(tmp_path / "p.jsonl", ROWS), max_length=128)
    bb = micro_backbone(lora=LoRA(r=4, alpha=8, dropout=0.0))

    def key(n: int) -> dict:
        target = EmbeddedTasks(format="instruction", n=n, split="val", categories=["add", "sub"])
        sel = LESS(pool, target=target, checkpoints=str(tmp_path / "ckpt"), scorer=bb, progress=False)
        sel.tokenizer = pool.tokenizer = bb.tokenizer
        return sel.scorer_config()

    assert key(6)["target"][0] == key(8)["target"][0]  # one source name for both target sets
    assert key(6) != key(8) and key(6) == key(6)  # 6 or 8 target rows: another key; the same rows: the same key
