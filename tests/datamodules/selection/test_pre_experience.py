"""Cherry's pre-experience stage: k-means is a Lloyd fixed point that recovers separated clusters and is
scikit-learn's seeded KMeans, the per-cluster middle-perplexity band by hand, perplexity/embedding against a float64
reference, and the two-command flow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ltune.cli import main
from ltune.datamodules import IFDPreExperience, InstructionData
from ltune.datamodules.selection.geometry import kmeans
from ltune.datamodules.selection.pre_experience import band_per_cluster
from tests.conftest import ROOT, micro_backbone, write_jsonl
from tests.datamodules.selection.conftest import SHRINK


def test_kmeans_recovers_separated_blobs_and_is_a_lloyd_fixed_point():
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(3).repeat_interleave(40)
    x = torch.randn(120, 5, generator=g) * 0.3 + torch.tensor([[0.0] * 5, [6.0] * 5, [-6.0] * 5])[truth]
    labels, centers = kmeans(x, 3, seed=0)
    pairs = {(int(a), int(b)) for a, b in zip(labels, truth)}
    assert len(pairs) == 3  # one label per blob: the partition is recovered exactly
    for c in range(3):  # fixed point: each centre is the mean of its points, each point at its nearest centre
        torch.testing.assert_close(centers[c], x[labels == c].mean(0), rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cdist(x, centers).argmin(1), labels)
    again, _ = kmeans(x, 3, seed=0)
    assert torch.equal(again, labels)


def test_kmeans_is_sklearns_seeded_kmeans_on_overlapping_blobs():
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(n_samples=150, centers=5, n_features=4, cluster_std=2.5, random_state=7)  # blobs overlap
    x = x.astype(np.float32)
    for seed, n_init in ((0, 1), (3, 1), (0, 4)):
        ref = KMeans(n_clusters=5, n_init=n_init, random_state=seed).fit(x)
        labels, centers = kmeans(torch.from_numpy(x), 5, seed=seed, n_init=n_init)
        assert labels.dtype == torch.int64 and labels.tolist() == ref.labels_.tolist()
        np.testing.assert_allclose(centers.numpy(), ref.cluster_centers_, rtol=1e-6)
    few, _ = kmeans(torch.from_numpy(x[:3]), 5)  # k is clipped to N: every point its own cluster
    assert sorted(few.tolist()) == [0, 1, 2]


def test_band_per_cluster_by_hand():
    labels = np.array([0] * 12 + [1] * 3)
    ppl = np.array([5, 1, 9, 2, 8, 3, 7, 4, 6, 10, 11, 12, 1, 2, 3], dtype=float)
    # cluster 0: percentiles 25/75 of 1..12 are 3.75 and 9.25 -> rows with ppl 4..9 (indices 0,2,4,6,7,8),
    # 6 rows; n=2 -> stride 3 -> indices 0 and 6. Cluster 1 (3 rows >= n=2): band [1.5, 2.5] -> only row 13 (< n).
    assert band_per_cluster(labels, ppl, 2).tolist() == [0, 6, 13]
    # n=4: stride 6 // 4 = 1 -> the first 4 of the band; cluster 1 has 3 < 4 rows -> taken whole
    assert band_per_cluster(labels, ppl, 4).tolist() == [0, 2, 4, 6, 12, 13, 14]


def test_perplexity_and_embedding_match_a_float64_reference(tmp_path):
    rows = [{"prompt": f"What is {i}+{2 * i}?", "response": f"{3 * i}"} for i in range(1, 9)]
    sel = IFDPreExperience(InstructionData(train=write_jsonl(tmp_path / "p.jsonl", rows)), clusters=2, per_cluster=2,
                           cache_dir=str(tmp_path / "c"), report_dir=str(tmp_path / "r"), score_batch_size=3,
                           progress=False)  # fmt: skip
    sel.backbone = micro_backbone()
    sel.tokenizer = sel.backbone.tokenizer
    sel.select()
    model, tok = micro_backbone().load_model().eval().double(), sel.tokenizer
    for i in (0, 7):
        ids = torch.tensor([tok(f"Q: {rows[i]['prompt']}\nA: ", add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        nll = -out.logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).mean()
        assert sel.scores["ppl"][i] == pytest.approx(nll.exp().item(), rel=1e-5)
        np.testing.assert_allclose(sel.scores["embedding"][i], out.hidden_states[-1][0].mean(0).numpy(), rtol=1e-4,
                                   atol=1e-5)  # fmt: skip
    labels, _ = kmeans(torch.from_numpy(sel.scores["embedding"]), 2, seed=0)  # the two pieces tested above
    assert sel.selected == band_per_cluster(labels.numpy(), sel.scores["ppl"], 2).tolist()


def test_pre_experience_then_ifd_with_the_exported_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shrink = [a for a in SHRINK if "max_steps" not in a and "val_check" not in a]
    main(["fit", "--config", str(ROOT / "configs/selection/cherry_pre.yaml"), *shrink, "--trainer.max_steps=2",
          "--data.init_args.clusters=4", "--data.init_args.per_cluster=3"])  # fmt: skip
    report = pd.read_csv(tmp_path / "runs/cherry_pre/version_0/selection/selection.csv")
    assert report["selected"].sum() == 12
    hf = tmp_path / "runs/cherry_pre/version_0/hf"
    main(["select", "--config", str(ROOT / "configs/selection/ifd.yaml"), *SHRINK,
          f"--data.init_args.scorer.name_or_path={hf}", "--output", "kept.jsonl"])  # fmt: skip
    assert 1 <= len((tmp_path / "kept.jsonl").read_text().splitlines()) <= 6
