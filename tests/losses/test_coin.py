"""CoIN loss: InfoNCE by hand, the rescale that caps the contrastive term at the generation loss, metrics."""

import math

import pytest
import torch

from ltune.losses.coin import coin_loss, info_nce


def test_info_nce_by_hand():
    """h = e1, e2; h+ = e1, (e1 + e2)/sqrt(2); tau = 1, so s = [[1, r], [0, r]] with r = 1/sqrt(2).

    original -> paraphrase rows: -log(e / (e + e^r)), -log(e^r / (1 + e^r))
    paraphrase -> original rows (s^T = [[1, 0], [r, r]]): -log(e / (e + 1)), -log(1/2)
    """
    r = 1 / math.sqrt(2)
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h_pos = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # cosine ignores the norm
    loss, s = info_nce(h, h_pos, tau=1.0)
    o2p = -math.log(math.e / (math.e + math.exp(r))) - math.log(math.exp(r) / (1 + math.exp(r)))
    p2o = -math.log(math.e / (math.e + 1)) + math.log(2)
    assert loss.item() == pytest.approx((o2p / 2 + p2o / 2) / 2, rel=1e-6)
    torch.testing.assert_close(s, torch.tensor([[1.0, r], [0.0, r]]))
    loss_t, _ = info_nce(h, h, tau=0.5)  # identical pairs, orthogonal negatives: s = 2 I
    assert loss_t.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def _inputs():
    lp = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.5]]))
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    h_pos = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)  # crossed: InfoNCE is large
    return lp, mask, h, h_pos


def test_contrastive_term_is_rescaled_to_the_generation_loss():
    """Generation: CE_orig = CE_para = (ln 2 + ln 4 + ln 2) / 3 = (4/3) ln 2, L_gen = (8/3) ln 2.
    lambda * InfoNCE (1000 * ~40) > L_gen, so C = L_gen in value: L = 2 L_gen; its gradient keeps InfoNCE's
    direction scaled by L_gen / (lambda InfoNCE) * lambda."""
    lp, mask, h, h_pos = _inputs()
    gen = 8 / 3 * math.log(2)
    loss, m = coin_loss(lp, mask, lp, mask, h, h_pos, tau=0.05, contrastive_weight=1000.0)
    assert m["generation_loss"].item() == pytest.approx(gen, rel=1e-6)
    assert m["contrastive_loss"].item() == pytest.approx(gen, rel=1e-6)
    assert loss.item() == pytest.approx(2 * gen, rel=1e-6)
    loss.backward()
    g = h.grad.clone()
    h.grad = None
    nce, _ = info_nce(h, h_pos, tau=0.05)
    nce.backward()
    torch.testing.assert_close(g, h.grad * gen / nce.item(), rtol=1e-4, atol=1e-7)
    assert m["retrieval_acc"].item() == 0.0 and m["pos_cos"].item() == 0.0


def test_small_contrastive_term_is_left_alone_and_zero_weight_is_the_ablation():
    lp, mask, h, h_pos = _inputs()
    _, nce_only = info_nce(h, h_pos, tau=0.05)
    loss, m = coin_loss(lp, mask, lp, mask, h, h_pos, contrastive_weight=1e-4)
    assert m["contrastive_loss"].item() == pytest.approx(1e-4 * m["info_nce"].item(), rel=1e-6)
    loss0, m0 = coin_loss(lp, mask, lp, mask, h, h_pos, contrastive_weight=0.0)
    assert loss0.item() == pytest.approx(m0["generation_loss"].item()) and m0["contrastive_loss"].item() == 0


def test_retrieval_and_hard_negative_cosine():
    lp, mask, _, _ = _inputs()
    h = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    h_pos = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    _, m = coin_loss(lp, mask, lp, mask, h, h_pos, hard_negative=torch.tensor([1, 0]))
    assert m["retrieval_acc"].item() == 1.0 and m["pos_cos"].item() == pytest.approx(1.0)
    assert m["hard_neg_cos"].item() == pytest.approx(0.6)


def test_gathered_candidates_score_local_rows_against_every_rank():
    h = torch.randn(6, 8)
    h_pos = h + 0.1 * torch.randn(6, 8)
    full, s_full = info_nce(h, h_pos)
    local, s = info_nce(h[2:4], h_pos[2:4], h_all=h, h_pos_all=h_pos, offset=2)
    torch.testing.assert_close(s, s_full[2:4])
    rows = torch.nn.functional.cross_entropy(s_full[2:4], torch.tensor([2, 3]))
    rows_rev = torch.nn.functional.cross_entropy(s_full.T[2:4], torch.tensor([2, 3]))
    torch.testing.assert_close(local, (rows + rows_rev) / 2)
