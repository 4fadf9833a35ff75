"""DPO, cDPO, IPO and SimPO losses: hand-computed numbers, and TRL's own loss code on identical tensors (loss,
gradients, metrics): ``DPOTrainer._compute_loss`` (sigmoid, ipo) run on a stub model that returns our log-probs, and
``CPOTrainer.cpo_loss`` (label-smoothed sigmoid = cDPO on the log-ratios; ``simpo``)."""

import math
import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from ltune.losses.dpo import dpo_loss, sequence_logps, simpo_loss

ln = math.log


def sig(x):
    return 1 / (1 + math.exp(-x))


def _one_pair():
    """Chosen response: two tokens of p = 0.5 (sum ln 0.25); rejected: one token of p = 0.125."""
    chosen = torch.log(torch.tensor([[0.9, 0.5, 0.5]]))  # first token is prompt (masked out)
    rejected = torch.log(torch.tensor([[0.9, 0.125, 1.0]]))
    cmask, rmask = torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]])
    return chosen, rejected, cmask, rmask


def test_dpo_by_hand():
    """s_w = ln 0.25 - ln 0.5 = -ln 2; s_l = ln 0.125 - ln 0.5 = -ln 4; h = beta (s_w - s_l) = 0.1 ln 2."""
    c, r, cm, rm = _one_pair()
    ref_c, ref_r = torch.tensor([ln(0.5)]), torch.tensor([ln(0.5)])
    loss, m = dpo_loss(c, r, cm, rm, ref_c, ref_r, beta=0.1)
    assert loss.item() == pytest.approx(-ln(sig(0.1 * ln(2))), rel=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(-0.1 * ln(2), rel=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(-0.1 * ln(4), rel=1e-6)
    assert m["rewards/margins"].item() == pytest.approx(0.1 * ln(2), rel=1e-6)
    assert m["rewards/accuracies"].item() == 1.0
    assert m["logps/chosen"].item() == pytest.approx(ln(0.25), rel=1e-6)
    assert m["logps/rejected"].item() == pytest.approx(ln(0.125), rel=1e-6)
    smooth, _ = dpo_loss(c, r, cm, rm, ref_c, ref_r, beta=0.1, label_smoothing=0.2)
    h = 0.1 * ln(2)
    assert smooth.item() == pytest.approx(-0.8 * ln(sig(h)) - 0.2 * ln(sig(-h)), rel=1e-6)


def test_ipo_by_hand():
    """Per-token log-ratios: s_w / 2 = -ln 2 / 2, s_l / 1 = -ln 4; loss = (ln 4 - ln 2 / 2 - 1 / (2 tau))^2."""
    c, r, cm, rm = _one_pair()
    ref = torch.tensor([ln(0.5)])
    loss, _ = dpo_loss(c, r, cm, rm, ref, ref, beta=0.5, loss_type="ipo")
    assert loss.item() == pytest.approx((ln(4) - ln(2) / 2 - 1.0) ** 2, rel=1e-6)


def test_simpo_by_hand():
    """l_w = ln 0.25 / 2 = -ln 2, l_l = ln 0.125 = -3 ln 2; beta = 2, gamma = 1: h = 2 (2 ln 2) - 1."""
    c, r, cm, rm = _one_pair()
    loss, m = simpo_loss(c, r, cm, rm, beta=2.0, gamma=1.0)
    assert loss.item() == pytest.approx(-ln(sig(4 * ln(2) - 1)), rel=1e-6)
    assert m["logps/chosen"].item() == pytest.approx(-ln(2), rel=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(-6 * ln(2), rel=1e-6)


def test_sequence_logps_and_errors():
    assert sequence_logps(torch.tensor([[-1.0, -2.0, -4.0]]), torch.tensor([[0, 1, 1]])).tolist() == [-6.0]
    c, r, cm, rm = _one_pair()
    z = torch.zeros(1)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(c, r, cm, rm, z, z, label_smoothing=0.5)
    with pytest.raises(ValueError, match="sigmoid"):
        dpo_loss(c, r, cm, rm, z, z, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(c, r, cm, rm, z, z, loss_type="hinge")


def _batch(seed=0, b=8, t=9):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t, (2 * b,), generator=g)
    lengths[0], lengths[b] = t - 1, 1  # a full row and a one-token response
    mask = (torch.arange(t - 1) < lengths[:, None]).float()  # [2B, T-1] response tokens (after the shift)
    logp = (-torch.rand(2 * b, t - 1, generator=g) * 3 * mask).requires_grad_(True)
    ref = (logp.detach() + 0.4 * torch.randn(2 * b, t - 1, generator=g)) * mask
    return logp, mask, ref.sum(-1)


# ---- TRL on identical tensors -------------------------------------------------------------------------------------
def _trl_dpo(logp, mask, ref_logps, loss_type, beta):
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    acc = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    n = logp.shape[0]
    outputs = SimpleNamespace(
        log_probs=logp, entropy=torch.zeros_like(logp), mean_logits=torch.zeros_like(logp),
        is_top1=torch.zeros_like(logp, dtype=torch.bool),
    )  # fmt: skip
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=acc, aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0],
        beta=beta, label_smoothing=0.0, use_weighting=False, _metrics={"train": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    completion_mask = torch.cat([torch.zeros(n, 1), mask], 1).long()  # [2B, T]: TRL shifts it by one
    inputs = {
        "input_ids": torch.zeros_like(completion_mask), "attention_mask": torch.ones_like(completion_mask),
        "completion_mask": completion_mask, "ref_chosen_logps": ref_logps[: n // 2],
        "ref_rejected_logps": ref_logps[n // 2 :],
    }  # fmt: skip
    loss = trl_dpo.DPOTrainer._compute_loss(stub, lambda **kw: outputs, inputs, False)
    return loss, {k: v[0] for k, v in stub._metrics["train"].items()}


@pytest.mark.parametrize("loss_type,beta", [("sigmoid", 0.1), ("sigmoid", 0.5), ("ipo", 0.1), ("ipo", 0.5)])
def test_dpo_matches_trl_dpo_trainer(loss_type, beta):
    logp, mask, ref = _batch()
    n = logp.shape[0] // 2
    ours, m = dpo_loss(logp[:n], logp[n:], mask[:n], mask[n:], ref[:n], ref[n:], beta=beta, loss_type=loss_type)
    (grad,) = torch.autograd.grad(ours, logp)
    theirs, tm = _trl_dpo(logp, mask, ref, loss_type, beta)
    (tgrad,) = torch.autograd.grad(theirs, logp)
    torch.testing.assert_close(ours, theirs)
    # TRL sums every position (its fused head returns a constant 0 outside the labels): compare on the responses
    torch.testing.assert_close(grad * mask, tgrad * mask)
    assert (grad * mask).abs().sum() > 0
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen"):
        assert m[key].item() == pytest.approx(tm[key], rel=1e-5, abs=1e-7), key
    assert 0 < tm["rewards/accuracies"] < 1  # the case exercises both orderings


def _cpo(loss_type, beta, label_smoothing, gamma=0.0):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    stub = SimpleNamespace(
        alpha=0.0, loss_type=loss_type, beta=beta, label_smoothing=label_smoothing, simpo_gamma=gamma,
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )  # fmt: skip
    return lambda c, r: cpo.CPOTrainer.cpo_loss(stub, c, r)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_cdpo_matches_trl_label_smoothed_sigmoid(label_smoothing):
    """TRL 1.16's DPO ``sigmoid`` has no smoothing; its CPO ``sigmoid`` is the same smoothed form on any log-ratio
    pair, so it takes the DPO log-ratios (reference subtracted) as its inputs."""
    logp, mask, ref = _batch(1)
    n = logp.shape[0] // 2
    ours, m = dpo_loss(logp[:n], logp[n:], mask[:n], mask[n:], ref[:n], ref[n:], beta=0.2,
                       label_smoothing=label_smoothing)  # fmt: skip
    (grad,) = torch.autograd.grad(ours, logp)
    s = sequence_logps(logp, mask) - ref
    losses, chosen_r, rejected_r = _cpo("sigmoid", 0.2, label_smoothing)(s[:n], s[n:])
    (tgrad,) = torch.autograd.grad(losses.mean(), logp)
    torch.testing.assert_close(ours, losses.mean())
    torch.testing.assert_close(grad, tgrad)
    torch.testing.assert_close(m["rewards/margins"], (chosen_r - rejected_r).mean())


@pytest.mark.parametrize("beta,gamma,label_smoothing", [(2.0, 1.0, 0.0), (2.5, 1.4, 0.0), (10.0, 3.0, 0.1)])
def test_simpo_matches_trl_cpo_simpo(beta, gamma, label_smoothing):
    """TRL's CPO trainer with ``loss_type="simpo"`` averages each response's log-probs (``average_log_prob``)."""
    logp, mask, _ = _batch(2)
    n = logp.shape[0] // 2
    ours, m = simpo_loss(logp[:n], logp[n:], mask[:n], mask[n:], beta=beta, gamma=gamma,
                         label_smoothing=label_smoothing)  # fmt: skip
    (grad,) = torch.autograd.grad(ours, logp)
    avg = sequence_logps(logp, mask) / mask.sum(-1)
    losses, chosen_r, rejected_r = _cpo("simpo", beta, label_smoothing, gamma)(avg[:n], avg[n:])
    (tgrad,) = torch.autograd.grad(losses.mean(), logp)
    torch.testing.assert_close(ours, losses.mean())
    torch.testing.assert_close(grad, tgrad)
    torch.testing.assert_close(m["rewards/chosen"], chosen_r.mean())
    torch.testing.assert_close(m["rewards/accuracies"], (chosen_r > rejected_r).float().mean())
