"""ORPO loss: hand-computed numbers, the float64 formula, TRL's odds_ratio_loss on identical tensors, stability."""

import math
from types import SimpleNamespace

import pytest
import torch

from ltune.kernels import odds_ratio_loss
from ltune.kernels.reference import reference_odds_ratio_loss
from ltune.losses.orpo import mean_logprob, orpo_loss


def clamped_reference(c, r):
    """The plain-autograd definition with the kernels' clamp (LOGP_EPS), so a mean log-prob of 0 stays finite."""
    return reference_odds_ratio_loss(c.float(), r.float(), clamp=1e-6)


IMPLS = [clamped_reference, odds_ratio_loss]


@pytest.mark.parametrize("odds_ratio", IMPLS, ids=["reference", "kernels.odds_ratio_loss"])
def test_orpo_loss_by_hand(odds_ratio):
    """Two pairs, beta = 0.1.

    Pair 1: chosen tokens p = 0.5, 0.5 -> P_w = 0.5, odds 1; rejected p = 0.25 -> odds 1/3.
            log OR = ln 3, L_OR = -ln sigmoid(ln 3) = -ln(3/4) = ln(4/3).
    Pair 2: chosen p = 0.2 -> odds 1/4; rejected p = 0.8 -> odds 4. log OR = -ln 16, L_OR = -ln(1/17) = ln 17.
    NLL over the response tokens of the chosen rows: (ln 2 + ln 2 + ln 5) / 3; with a prompt token of p = 0.1
    in the NLL mask: (ln 10 + ln 2 + ln 2 + ln 5) / 4.
    """
    ln = math.log
    chosen = torch.log(torch.tensor([[0.1, 0.5, 0.5], [0.1, 0.2, 0.9]]))
    rejected = torch.log(torch.tensor([[0.1, 0.25], [0.1, 0.8]]))
    cmask = torch.tensor([[0, 1, 1], [0, 1, 0]], dtype=torch.bool)
    rmask = torch.tensor([[0, 1], [0, 1]], dtype=torch.bool)
    loss, m = orpo_loss(chosen, rejected, cmask, rmask, beta=0.1, odds_ratio=odds_ratio)
    l_or = (ln(4 / 3) + ln(17)) / 2
    assert loss.item() == pytest.approx((2 * ln(2) + ln(5)) / 3 + 0.1 * l_or, rel=1e-6)
    assert m["log_odds_chosen"].item() == pytest.approx((ln(3) - ln(16)) / 2, rel=1e-6)
    assert m["log_odds_ratio"].item() == pytest.approx(-l_or, rel=1e-6)
    assert m["rewards/accuracies"].item() == 0.5
    assert m["logps/chosen"].item() == pytest.approx((ln(0.5) + ln(0.2)) / 2, rel=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(0.1 * (ln(0.25) + ln(0.8)) / 2, rel=1e-6)
    assert m["rewards/margins"].item() == pytest.approx(0.1 * (ln(0.5) - ln(0.25) + ln(0.2) - ln(0.8)) / 2, rel=1e-6)
    nll_mask = torch.tensor([[1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    loss2, m2 = orpo_loss(chosen, rejected, cmask, rmask, nll_mask, beta=0.1, odds_ratio=odds_ratio)
    assert m2["nll_loss"].item() == pytest.approx((ln(10) + 2 * ln(2) + ln(5)) / 4, rel=1e-6)
    assert loss2.item() == pytest.approx(m2["nll_loss"].item() + 0.1 * l_or, rel=1e-6)


def test_mean_logprob_is_length_normalised():
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-4.0, 0.0, 0.0]])
    assert mean_logprob(lp, torch.tensor([[1, 1, 0], [1, 0, 0]])).tolist() == [-1.5, -4.0]


@pytest.mark.parametrize("odds_ratio", IMPLS, ids=["reference", "kernels.odds_ratio_loss"])
def test_odds_ratio_matches_float64_formula_and_gradients(odds_ratio):
    g = torch.Generator().manual_seed(0)
    c = -torch.rand(64, generator=g, dtype=torch.float64) * 6 - 1e-3
    r = -torch.rand(64, generator=g, dtype=torch.float64) * 6 - 1e-3
    ref_loss, ref_lo = reference_odds_ratio_loss(c.clone().requires_grad_(), r)
    c32, r32 = c.float().requires_grad_(), r.float().requires_grad_()
    loss, lo = odds_ratio(c32, r32)
    torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lo.double(), ref_lo.detach(), rtol=1e-5, atol=1e-5)
    c64, r64 = c.clone().requires_grad_(), r.clone().requires_grad_()
    reference_odds_ratio_loss(c64, r64)[0].sum().backward()
    loss.sum().backward()
    torch.testing.assert_close(c32.grad.double(), c64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r32.grad.double(), r64.grad, rtol=1e-4, atol=1e-6)


def _trl():
    pytest.importorskip("trl")
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        from trl.experimental.orpo.orpo_trainer import ORPOTrainer
    except ImportError:  # older TRL: ORPO outside trl.experimental
        from trl import ORPOTrainer
    return ORPOTrainer


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_agrees_with_trl_odds_ratio_loss_on_identical_tensors(beta):
    """TRL's ``ORPOTrainer.odds_ratio_loss`` (an unbound method: it only reads ``self.beta`` and the device)."""
    trainer = _trl()
    fake_self = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device=torch.device("cpu")))
    g = torch.Generator().manual_seed(1)
    c = -torch.rand(256, generator=g) * 8 - 1e-4
    r = -torch.rand(256, generator=g) * 8 - 1e-4
    c[:4] = torch.tensor([-1e-4, -1e-3, -0.05, -0.69])  # near 0 and near the -ln 2 branch of log1mexp
    c_trl, r_trl = c.clone().requires_grad_(), r.clone().requires_grad_()
    losses, chosen_rewards, rejected_rewards, ratio_mean, log_odds_mean = trainer.odds_ratio_loss(
        fake_self, c_trl, r_trl
    )
    nll = torch.tensor(1.7)
    trl_total = nll - losses.mean()  # TRL's get_batch_loss_metrics
    trl_total.backward()

    c_ours, r_ours = c.clone().requires_grad_(), r.clone().requires_grad_()
    # every token has log-prob c (or r): the length-normalised mean is exactly c (or r)
    loss, m = orpo_loss(
        c_ours[:, None].expand(-1, 3),
        r_ours[:, None].expand(-1, 2),
        torch.ones(256, 3, dtype=torch.bool),
        torch.ones(256, 2, dtype=torch.bool),
        torch.zeros(256, 3, dtype=torch.bool),  # no SFT term here: TRL's NLL comes from its own forward
        beta=beta,
        odds_ratio=odds_ratio_loss,
    )
    loss = loss + nll
    loss.backward()
    torch.testing.assert_close(loss, trl_total, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(m["log_odds_ratio"], ratio_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(m["log_odds_chosen"], log_odds_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(m["rewards/chosen"], chosen_rewards.mean())
    torch.testing.assert_close(m["rewards/rejected"], rejected_rewards.mean())
    torch.testing.assert_close(m["rewards/accuracies"], (chosen_rewards > rejected_rewards).float().mean())
    torch.testing.assert_close(c_ours.grad, c_trl.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(r_ours.grad, r_trl.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("odds_ratio", IMPLS, ids=["reference", "kernels.odds_ratio_loss"])
def test_no_nan_when_a_mean_logprob_reaches_zero(odds_ratio):
    c = torch.tensor([0.0, -1e-9, -1e-7, 1e-7, -3.0], requires_grad=True)
    r = torch.tensor([-2.0, 0.0, -1e-9, -0.5, -3.0], requires_grad=True)
    loss, log_odds = odds_ratio(c, r)
    (loss.sum() + log_odds.sum()).backward()
    for t in (loss, log_odds, c.grad, r.grad):
        assert torch.isfinite(t).all(), t
    assert log_odds[0] > 10  # a sure chosen vs a likely-wrong rejected: large positive log odds, not inf
