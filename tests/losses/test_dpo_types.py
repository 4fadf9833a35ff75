"""TRL's DPO loss types (``ltune.losses.dpo_types``): every type and weighted combinations against TRL 1.16's own
``DPOTrainer._compute_loss`` on identical float64 tensors (loss, gradients, metrics; TRL's method runs on a stub whose
model returns our log-probs), hand-computed numbers for a few, the list of names, and the one-line errors."""

import ast
import math
import re
import warnings
from collections import defaultdict
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from ltune.losses.dpo import dpo_mix_loss
from ltune.losses.dpo_types import DPO_LOSS_TYPES, check_loss_types, weighted_dpo_loss

ln = math.log


def sig(x):
    return 1 / (1 + math.exp(-x))


def _batch(seed=0, b=8, t=9):
    """``[2B, T-1]`` float64 policy log-probs (a leaf, 0 outside the responses), the response mask, and ``[2B]`` summed
    reference log-probs; one full-length and one one-token response."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t, (2 * b,), generator=g)
    lengths[0], lengths[b] = t - 1, 1
    mask = (torch.arange(t - 1) < lengths[:, None]).double()
    logp = (-torch.rand(2 * b, t - 1, generator=g, dtype=torch.float64) * 3 * mask).requires_grad_(True)
    ref = (logp.detach() + 0.6 * torch.randn(2 * b, t - 1, generator=g, dtype=torch.float64)) * mask
    return logp, mask, ref.sum(-1)


def _trl_dpo(logp, mask, ref_logps, loss_types, loss_weights, beta, label_smoothing=0.0, discopop_tau=0.05):
    """TRL 1.16's ``DPOTrainer._compute_loss`` on a stub: its model returns ``logp`` as the fused head's per-token
    log-probs, the reference log-probs come precomputed; returns the loss and the logged metrics."""
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    acc = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    n = logp.shape[0]
    outputs = SimpleNamespace(
        log_probs=logp, entropy=torch.zeros_like(logp), mean_logits=torch.zeros_like(logp),
        is_top1=torch.zeros_like(logp, dtype=torch.bool),
    )  # fmt: skip
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=acc, aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=loss_types, loss_weights=loss_weights,
        beta=beta, label_smoothing=label_smoothing, use_weighting=False,
        args=SimpleNamespace(discopop_tau=discopop_tau),
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    completion_mask = torch.cat([torch.zeros(n, 1), mask], 1).long()  # [2B, T]: TRL shifts it by one
    inputs = {
        "input_ids": torch.zeros_like(completion_mask), "attention_mask": torch.ones_like(completion_mask),
        "completion_mask": completion_mask, "ref_chosen_logps": ref_logps[: n // 2],
        "ref_rejected_logps": ref_logps[n // 2 :],
    }  # fmt: skip
    loss = trl_dpo.DPOTrainer._compute_loss(stub, lambda **kw: outputs, inputs, False)
    return loss, {k: v[0] for k, v in stub._metrics["train"].items()}


def _trl_weights(loss_type, loss_weights):
    """The types and weights as TRL's ``DPOConfig`` and ``DPOTrainer.__init__`` resolve them (a string is wrapped,
    missing weights are all 1.0)."""
    trl = pytest.importorskip("trl")
    with warnings.catch_warnings():  # transformers' TrainingArguments deprecations
        warnings.simplefilter("ignore", FutureWarning)
        config = trl.DPOConfig(output_dir="unused", loss_type=loss_type, loss_weights=loss_weights, bf16=False,
                               use_cpu=True)  # fmt: skip
    return config.loss_type, config.loss_weights or [1.0] * len(config.loss_type)


def _compare(loss_type, loss_weights=None, beta=0.1, label_smoothing=0.0, discopop_tau=0.05, seed=0):
    logp, mask, ref = _batch(seed)
    n = logp.shape[0] // 2
    kw = dict(beta=beta, label_smoothing=label_smoothing, discopop_tau=discopop_tau)
    ours, m = dpo_mix_loss(logp[:n], logp[n:], mask[:n], mask[n:], ref[:n], ref[n:], loss_type=loss_type,
                           loss_weights=loss_weights, **kw)  # fmt: skip
    (grad,) = torch.autograd.grad(ours, logp)
    theirs, tm = _trl_dpo(logp, mask, ref, *_trl_weights(loss_type, loss_weights), **kw)
    (tgrad,) = torch.autograd.grad(theirs, logp)
    # exo_pair: TRL takes log(eps) of a float32 tensor, hence rtol 1e-6 rather than float64's 1e-7
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)
    # TRL sums every position (its fused head returns a constant 0 outside the labels): compare on the responses
    torch.testing.assert_close(grad * mask, tgrad * mask, rtol=1e-6, atol=1e-9)
    assert (grad * mask).abs().sum() > 0
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected"):  # fmt: skip
        assert m[key].item() == pytest.approx(tm[key], rel=1e-9, abs=1e-12), key
    assert 0 < tm["rewards/accuracies"] < 1  # the case exercises both orderings


def _cases():
    for name in DPO_LOSS_TYPES:
        smoothing = {"exo_pair": [1e-3, 0.2], "robust": [0.0, 0.1], "aot": [0.0, 0.3], "aot_unpaired": [0.0, 0.3]}
        taus = [0.05, 0.5] if name == "discopop" else [0.05]
        for beta in (0.1, 2.0):  # 2.0: hinge's relu is zero on some pairs, discopop's mix is far from 1/2
            for eps in smoothing.get(name, [0.0]):
                for tau in taus:
                    yield pytest.param(name, beta, eps, tau, id=f"{name}-beta{beta}-eps{eps}-tau{tau}")


@pytest.mark.parametrize("loss_type,beta,label_smoothing,discopop_tau", list(_cases()))
def test_every_loss_type_matches_trl(loss_type, beta, label_smoothing, discopop_tau):
    _compare(loss_type, beta=beta, label_smoothing=label_smoothing, discopop_tau=discopop_tau)


@pytest.mark.parametrize(
    "loss_type,loss_weights,beta,label_smoothing",
    [(["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0], 0.1, 0.0),  # MPO (TRL's dpo_trainer.md)
     (["robust", "aot", "exo_pair", "aot_unpaired"], [0.5, 1.5, 2.0, 0.25], 0.5, 0.1),
     (["hinge", "ipo", "sigmoid_norm", "discopop", "nca_pair"], None, 0.5, 0.0),
     (["apo_zero", "apo_down", "sppo_hard", "sft", "sft"], [1.0, -0.5, 0.01, 2.0, 0.5], 0.2, 0.0),
     ("hinge", None, 1.0, 0.0)],
)  # fmt: skip
def test_weighted_combinations_match_trl(loss_type, loss_weights, beta, label_smoothing):
    _compare(loss_type, loss_weights, beta=beta, label_smoothing=label_smoothing, discopop_tau=0.3, seed=3)


def test_the_names_are_trls():
    """TRL's own list: the names its loss code accepts (its error for an unknown one lists them), in its order."""
    logp, mask, ref = _batch()
    with pytest.raises(ValueError, match="Unknown loss type") as e:
        _trl_dpo(logp, mask, ref, ["nope"], [1.0], 0.1)
    assert tuple(ast.literal_eval(re.search(r"\[.*\]", str(e.value))[0])) == DPO_LOSS_TYPES


# ---- by hand --------------------------------------------------------------------------------------------------------
def _hand(loss_type, beta, ref_c=ln(0.5), ref_r=ln(0.5), **kw):
    """One pair: chosen log pi = ln 0.25, rejected ln 0.125; with the default reference rho_w = -ln 2, rho_l = -ln 4."""
    t = partial(torch.tensor, dtype=torch.float64)
    return weighted_dpo_loss(t([ln(0.25)]), t([ln(0.125)]), t([ref_c]), t([ref_r]), loss_type=loss_type, beta=beta,
                             **kw).item()  # fmt: skip


def test_by_hand():
    """sigma(-ln 2) = 1/3, sigma(ln 4) = 4/5, sigma(-ln 4) = 1/5; d = rho_w - rho_l = ln 2."""
    assert _hand("hinge", 0.1) == pytest.approx(1 - 0.1 * ln(2), rel=1e-12)
    assert _hand("hinge", 2.0) == 0.0  # 1 - 2 ln 2 < 0
    assert _hand("bco_pair", 1.0) == pytest.approx(ln(3) - ln(4 / 5), rel=1e-12)
    assert _hand("apo_zero", 1.0) == pytest.approx(1 - 1 / 3 + 1 / 5, rel=1e-12)
    assert _hand("apo_down", 1.0) == pytest.approx(1 / 3 + 1 - 2 / 3, rel=1e-12)
    assert _hand("nca_pair", 1.0) == pytest.approx(ln(3) - 0.5 * ln(2 / 3) - 0.5 * ln(4 / 5), rel=1e-12)
    assert _hand("sppo_hard", 0.5) == pytest.approx((-ln(2) - 1) ** 2 + (-ln(4) + 1) ** 2, rel=1e-12)
    h = 0.1 * ln(2)
    assert _hand("robust", 0.1, label_smoothing=0.2) == pytest.approx(
        (-0.8 * ln(sig(h)) + 0.2 * ln(sig(-h))) / 0.6, rel=1e-12
    )
    # discopop at z = 0 (rho_w = rho_l): the mix is 1/2, so ln 2 / 2 + exp(0) / 2
    assert _hand("discopop", 0.1, ref_c=ln(0.25), ref_r=ln(0.125)) == pytest.approx(ln(2) / 2 + 0.5, rel=1e-12)
    # MPO without its sft term, weighted: 0.8 (-ln sigma(h)) + 0.2 bco_pair
    bco = -ln(sig(-0.1 * ln(2))) - ln(sig(0.1 * ln(4)))
    mpo = _hand(["sigmoid", "bco_pair"], 0.1, loss_weights=[0.8, 0.2])
    assert mpo == pytest.approx(-0.8 * ln(sig(h)) + 0.2 * bco, rel=1e-12)


def test_aot_sorts_over_the_batch_and_sft_is_a_token_mean():
    """aot matches quantiles, not pairs: policy margins (1, -2) sort to (-2, 1), the reference's (0.5, 3) to (0.5, 3),
    so delta = (-2.5, -2) where the paired difference would be (0.5, -5)."""
    t = torch.tensor
    loss = weighted_dpo_loss(t([1.0, -2.0]), t([0.0, 0.0]), t([0.5, 3.0]), t([0.0, 0.0]), loss_type="aot", beta=1.0)
    assert loss.item() == pytest.approx((-ln(sig(-2.5)) - ln(sig(-2.0))) / 2, rel=1e-6)
    logprobs = t([[-1.0, -2.0, -50.0], [-3.0, -50.0, -50.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    z = torch.zeros(2)
    sft = weighted_dpo_loss(z, z, z, z, loss_type="sft", chosen_logprobs=logprobs, chosen_mask=mask)
    assert sft.item() == pytest.approx((1 + 2 + 3) / 3)  # not the mean of the per-row means (1.5 + 3) / 2


# ---- errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,match",
    [(("nope",), "'nope' is not one of sigmoid, hinge"), ((["sigmoid", "dpo"],), "'dpo' is not one of"),
     (([],), "empty"), ((["sigmoid", "bco_pair", "sft"], [0.8, 0.2]), "loss_weights has 2 weights for the 3"),
     (("sigmoid", [1.0, 1.0]), "loss_weights has 2 weights for the 1"), (("robust", None, 0.5), r"\[0, 0.5\)"),
     (("exo_pair",), "'exo_pair' needs label_smoothing > 0"), ((["hinge", "ipo"], None, 0.1), "no effect"),
     (("discopop", None, 0.0, 0.0), "discopop_tau=0.0")],
)  # fmt: skip
def test_errors_are_one_clear_line(args, match):
    with pytest.raises(ValueError, match=match) as e:
        check_loss_types(*args)
    assert "\n" not in str(e.value)


def test_trl_rejects_mismatched_weights_too():
    with pytest.raises(ValueError, match="same length"):
        _trl_weights(["sigmoid", "bco_pair", "sft"], [0.8, 0.2])


def test_check_returns_lists_and_default_weights():
    assert check_loss_types("sigmoid") == (["sigmoid"], [1.0])
    assert check_loss_types(("sigmoid", "sft"), (0.8, 1)) == (["sigmoid", "sft"], [0.8, 1.0])
    assert check_loss_types(["sigmoid", "hinge"], None, 0.1)[0] == ["sigmoid", "hinge"]  # sigmoid reads it (cDPO)


def test_missing_inputs_are_named():
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="chosen_tokens"):
        weighted_dpo_loss(z, z, z, z, loss_type="ipo")
    with pytest.raises(ValueError, match="chosen_logprobs"):
        weighted_dpo_loss(z, z, z, z, loss_type=["sigmoid", "sft"])
