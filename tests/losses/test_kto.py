"""KTO and unpaired APO-zero losses: hand-computed numbers, the KL estimate across ranks, and TRL's own loss code on
identical float64 tensors (loss, gradients, metrics): ``KTOTrainer._compute_loss`` run on a stub trainer whose model
returns our per-token log-probs (TRL 1.16 has no separate loss method)."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from ltune.losses.dpo import sequence_logps
from ltune.losses.kto import kto_kl, kto_loss

ln = math.log


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_kto_by_hand():
    """rho = (ln 0.25 - ln 0.5, ln 0.125 - ln 0.5) = (-ln 2, -ln 4); z0 = 0.3; beta = 0.5; labels (True, False)."""
    lp = torch.log(torch.tensor([[0.9, 0.5, 0.5], [0.9, 0.125, 1.0]]))
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    ref = torch.tensor([ln(0.5), ln(0.5)])
    labels = torch.tensor([True, False])
    loss, m = kto_loss(lp, mask, ref, labels, torch.tensor(0.3), beta=0.5, desirable_weight=2.0)
    d, u = 1 - sig(0.5 * (-ln(2) - 0.3)), 1 - sig(0.5 * (0.3 + ln(4)))
    assert loss.item() == pytest.approx((2.0 * d + u) / 2, rel=1e-6)  # divided by the examples, not the weights
    assert m["kl"].item() == pytest.approx(0.3)
    assert m["rewards/chosen"].item() == pytest.approx(-0.5 * ln(2), rel=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(-0.5 * ln(4), rel=1e-6)
    assert m["rewards/margins"].item() == pytest.approx(0.5 * ln(2), rel=1e-6)
    assert m["logps/chosen"].item() == pytest.approx(ln(0.25), rel=1e-6)
    assert m["logps/rejected"].item() == pytest.approx(ln(0.125), rel=1e-6)
    apo, m = kto_loss(lp, mask, ref, labels, beta=0.5, loss_type="apo_zero_unpaired")
    assert apo.item() == pytest.approx((1 - sig(-0.5 * ln(2)) + sig(-0.5 * ln(4))) / 2, rel=1e-6)
    assert m["kl"].item() == 0.0
    _, m = kto_loss(lp[:1], mask[:1], ref[:1], labels[:1], torch.tensor(0.0))  # desirable rows only
    assert "rewards/rejected" not in m and "rewards/margins" not in m and "rewards/chosen" in m


def test_kl_estimate_is_a_clamped_detached_mean_summed_across_ranks():
    pol = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    ref = torch.tensor([-1.5, -2.0, -2.0])
    z0 = kto_kl(pol, ref)  # differences (0.5, 0, -1): mean -1/6, clamped to 0
    assert z0.item() == 0.0 and not z0.requires_grad
    assert kto_kl(pol, ref - 1).item() == pytest.approx(1 - 1 / 6, rel=1e-6)
    # two ranks: this rank's 3 pairs and another rank's 1 pair (difference 4) -> the mean over the 4 pairs
    other = torch.tensor([4.0, 1.0])  # the other rank's (sum of differences, count)
    z0 = kto_kl(pol, ref, all_sum=lambda stats: stats + other)
    assert z0.item() == pytest.approx((-0.5 + 4.0) / 4, rel=1e-6)


def test_errors():
    lp, mask, ref, labels = torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1), torch.ones(1, dtype=torch.bool)
    with pytest.raises(ValueError, match="loss_type"):
        kto_loss(lp, mask, ref, labels, torch.tensor(0.0), loss_type="bco")
    with pytest.raises(ValueError, match="KL estimate"):
        kto_loss(lp, mask, ref, labels)


# ---- TRL on identical tensors -------------------------------------------------------------------------------------
def _batch(seed, b=8, t=9, chosen=None):
    """float64 per-token log-probs (0 outside the completion, as TRL's fused head returns them) of B rows and of
    their B KL sequences, the reference's summed log-probs of both, and the labels."""
    g = torch.Generator().manual_seed(seed)

    def rows():
        lengths = torch.randint(1, t, (b,), generator=g)
        mask = (torch.arange(t - 1) < lengths[:, None]).double()
        return (-torch.rand(b, t - 1, generator=g, dtype=torch.float64) * 3 * mask), mask

    (logp, mask), (kl_logp, kl_mask) = rows(), rows()
    logp.requires_grad_(True)
    ref = sequence_logps(logp.detach(), mask) + torch.randn(b, generator=g, dtype=torch.float64)
    ref_kl = sequence_logps(kl_logp, kl_mask) + torch.randn(b, generator=g, dtype=torch.float64) - 0.5
    labels = torch.rand(b, generator=g) < 0.4 if chosen is None else torch.tensor(chosen)
    return logp, mask, ref, labels, kl_logp, kl_mask, ref_kl


def _trl_kto(logp, mask, ref, labels, kl_logp, kl_mask, ref_kl, loss_type, beta, wd, wu):
    kto = pytest.importorskip("trl.trainer.kto_trainer")
    n = logp.shape[0]
    ids, kl_ids = torch.zeros(n, logp.shape[1] + 1, dtype=torch.long), torch.ones(n, kl_logp.shape[1] + 1).long()

    def model(input_ids, labels, **kwargs):  # KL sequences are the ones of token 1
        lp = kl_logp if bool(input_ids[0, 0] == 1) else logp
        return SimpleNamespace(log_probs=lp, entropy=torch.zeros_like(lp), mean_logits=torch.zeros_like(lp))

    stub = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=SimpleNamespace(device=torch.device("cpu"),
        gather_for_metrics=lambda x: x), aux_loss_enabled=False, precompute_ref_logps=True,
        calculate_KL=loss_type == "kto", loss_type=loss_type, beta=beta, desirable_weight=wd, undesirable_weight=wu,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    stub._compute_kl_logps = lambda m, batch: kto.KTOTrainer._compute_kl_logps(stub, m, batch)
    shifted = lambda m: torch.cat([torch.zeros(n, 1), m], 1).long()  # noqa: E731  TRL shifts its masks by one
    inputs = {
        "input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": shifted(mask),
        "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones_like(kl_ids), "KL_completion_mask": shifted(kl_mask),
        "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl,
    }  # fmt: skip
    loss = kto.KTOTrainer._compute_loss(stub, model, inputs, False)
    return loss, {k: v[-1] for k, v in stub._metrics["train"].items()}


CASES = [  # loss_type, beta, desirable_weight, undesirable_weight, labels (None: random, both occur)
    ("kto", 0.1, 1.0, 1.0, None),
    ("kto", 0.5, 1.33, 1.0, None),
    ("kto", 2.0, 1.0, 0.7, None),
    ("kto", 0.1, 1.0, 1.0, [True] * 8),
    ("kto", 0.3, 1.0, 2.0, [False] * 8),
    ("apo_zero_unpaired", 0.1, 1.0, 1.0, None),
    ("apo_zero_unpaired", 0.5, 0.5, 1.5, [True, False, False, False, False, False, False, False]),
]


@pytest.mark.parametrize("loss_type,beta,wd,wu,chosen", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_kto_matches_trl_kto_trainer(loss_type, beta, wd, wu, chosen, seed):
    logp, mask, ref, labels, kl_logp, kl_mask, ref_kl = _batch(seed, chosen=chosen)
    kl = kto_kl(sequence_logps(kl_logp, kl_mask), ref_kl) if loss_type == "kto" else None
    ours, m = kto_loss(logp, mask, ref, labels, kl, beta=beta, desirable_weight=wd, undesirable_weight=wu,
                       loss_type=loss_type)  # fmt: skip
    (grad,) = torch.autograd.grad(ours, logp)
    theirs, tm = _trl_kto(logp, mask, ref, labels, kl_logp, kl_mask, ref_kl, loss_type, beta, wd, wu)
    (tgrad,) = torch.autograd.grad(theirs, logp)
    assert ours.dtype == theirs.dtype == torch.float64
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad * mask, tgrad * mask)  # TRL sums every position; ours the completion's
    assert (grad * mask).abs().sum() > 0
    names = {"kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"}
    assert set(m) == names & set(tm)  # the same names, present in the same cases
    for key in m:
        assert m[key].item() == pytest.approx(tm[key], rel=1e-9, abs=1e-12), key
    if loss_type == "kto" and seed == 0 and chosen is None:
        assert m["kl"].item() > 0  # the case exercises a positive z0, not only the clamp
