"""``grpo_loss`` against TRL's own ``GRPOTrainer._compute_loss`` (skipped without trl): same loss, gradient and metrics
for every aggregation, with a reference (beta > 0), off-policy ratios and clip-higher. TRL's method runs on a stub
that hands it our log-probs (``pip install --no-deps trl`` is enough)."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from ltune.losses.grpo import grpo_loss

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")


class _Accelerator:
    num_processes = 1

    def reduce(self, x, reduction="sum"):
        return x

    def gather(self, x):
        return x


def _trl_loss(logp, old, ref, adv, mask, loss_type, beta, eps_low, eps_high, max_len, level="token"):
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level, beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None), loss_type=loss_type, epsilon_low=eps_low,
        epsilon_high=eps_high, use_vllm=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, accelerator=_Accelerator(), max_completion_length=max_len,
        _entropy_bonus_enabled=False, aux_loss_enabled=False, _metrics={"train": defaultdict(list)},
    )  # fmt: skip
    inputs = {
        "prompt_ids": torch.zeros(logp.shape[0], 2, dtype=torch.long), "prompt_mask": torch.ones(logp.shape[0], 2),
        "completion_ids": torch.zeros_like(mask, dtype=torch.long), "completion_mask": mask, "advantages": adv,
        "old_per_token_logps": old, "ref_per_token_logps": ref, "num_items_in_batch": mask.sum(),
    }  # fmt: skip
    stub.args.steps_per_generation = 1
    loss = trl_grpo.GRPOTrainer._compute_loss(stub, None, inputs)
    return loss, stub._metrics["train"]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_matches_trl(loss_type, beta):
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(6, 7, generator=g) * 3).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(6, 7, generator=g)  # ratios spread across both clip edges
    ref = logp.detach() + 0.5 * torch.randn(6, 7, generator=g)
    adv = torch.randn(6, generator=g)
    mask = (torch.arange(7) < torch.tensor([7, 5, 3, 7, 1, 6])[:, None]).float()
    ours, m = grpo_loss(logp, adv, mask, old, ref, beta=beta, epsilon_low=0.2, epsilon_high=0.28, loss_type=loss_type,
                        max_completion_length=9, num_items_in_batch=mask.sum())  # fmt: skip
    (grad,) = torch.autograd.grad(ours, logp)
    theirs, tm = _trl_loss(logp, old, ref, adv, mask, loss_type, beta, 0.2, 0.28, 9)
    (tgrad,) = torch.autograd.grad(theirs, logp)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad, tgrad)
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean") + (("kl",) if beta else ()):
        assert m[key].item() == pytest.approx(tm[key][0], rel=1e-5, abs=1e-7), key
    assert tm["clip_ratio/region_mean"][0] > 0  # the case exercises clipping


@pytest.mark.parametrize(
    "loss_type,level,eps_low,eps_high",  # sequence-level ratios average the noise: a tighter clip range exercises it
    [("grpo", "sequence", 0.05, 0.07), ("dapo", "sequence", 0.05, 0.07), ("cispo", "token", 0.2, 1.1),
     ("cispo", "sequence", 0.2, 1.02)],
)  # fmt: skip
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_variants_match_trl(loss_type, level, eps_low, eps_high, beta):
    """GSPO (sequence-level ratios) and CISPO (capped, detached weight) against TRL's own code."""
    g = torch.Generator().manual_seed(1)
    logp = (-torch.rand(6, 7, generator=g) * 3).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(6, 7, generator=g)
    ref = logp.detach() + 0.5 * torch.randn(6, 7, generator=g)
    adv = torch.randn(6, generator=g)
    mask = (torch.arange(7) < torch.tensor([7, 5, 3, 7, 1, 6])[:, None]).float()
    kw = dict(epsilon_low=eps_low, epsilon_high=eps_high, loss_type=loss_type, importance_sampling_level=level)
    ours, m = grpo_loss(logp, adv, mask, old, ref, beta=beta, num_items_in_batch=mask.sum(), **kw)
    (grad,) = torch.autograd.grad(ours, logp)
    theirs, tm = _trl_loss(logp, old, ref, adv, mask, loss_type, beta, eps_low, eps_high, 9, level)
    (tgrad,) = torch.autograd.grad(theirs, logp)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad, tgrad)
    keys = ("cispo_clip_ratio",) if loss_type == "cispo" else ("clip_ratio/low_mean", "clip_ratio/region_mean")
    for key in keys + (("kl",) if beta else ()):
        assert m[key].item() == pytest.approx(tm[key][0], rel=1e-5, abs=1e-7), key
    assert tm[keys[-1]][0] > 0  # the case exercises the clip or the cap


def test_rloo_advantages_match_trl_formula_and_hand():
    """Leave-one-out by hand: group (1, 0, 0, 1): A = 1 - 1/3, 0 - 2/3, ...; TRL's RLOOTrainer computes
    ``rewards - (group_sum - rewards) / (G - 1)`` then optionally ``(A - mean) / (std + 1e-4)``."""
    from ltune.losses.grpo import rloo_advantages

    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv, m = rloo_advantages(r, 4)
    torch.testing.assert_close(adv, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0, 0.0, 0.0]))
    assert m["frac_reward_zero_std"].item() == 0.5
    norm, _ = rloo_advantages(r, 4, normalize=True)
    torch.testing.assert_close(norm, (adv - adv.mean()) / (adv.std() + 1e-4))
