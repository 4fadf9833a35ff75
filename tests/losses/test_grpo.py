"""GRPO advantages and loss aggregations against numbers computed by hand (written out below)."""

import math

import pytest
import torch

from ltune.losses.grpo import group_advantages, grpo_loss

REWARDS = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # two prompts, G = 4


def test_group_scale_by_hand():
    adv, m = group_advantages(REWARDS, 4, "group")
    # group 1: mean 0.75, Bessel std sqrt((3 * 0.25^2 + 0.75^2) / 3) = 0.5; group 2 all equal: advantages 0
    s = 0.5 + 1e-4
    torch.testing.assert_close(adv, torch.tensor([0.25 / s, -0.75 / s, 0.25 / s, 0.25 / s, 0, 0, 0, 0]))
    assert m["reward"].item() == pytest.approx(3 / 8)
    assert m["reward_std"].item() == pytest.approx(math.sqrt(1.875 / 7))  # TRL's: over the batch (see below)
    assert m["frac_reward_zero_std"].item() == 0.5


def test_batch_and_none_scale_by_hand():
    # batch std: mean 3/8, squared deviations 3 * 0.625^2 + 5 * 0.375^2 = 1.875, / 7 -> sqrt
    s = math.sqrt(1.875 / 7) + 1e-4
    adv, _ = group_advantages(REWARDS, 4, "batch")
    torch.testing.assert_close(adv, torch.tensor([0.25 / s, -0.75 / s, 0.25 / s, 0.25 / s, 0, 0, 0, 0]))
    adv, _ = group_advantages(REWARDS, 4, "none")
    torch.testing.assert_close(adv, torch.tensor([0.25, -0.75, 0.25, 0.25, 0, 0, 0, 0]))


def test_group_size_must_divide():
    with pytest.raises(ValueError, match="group_size=3 .* 8 rewards"):
        group_advantages(REWARDS, 3)


# Two completions, three token slots; the last token of row 1 is padding (its ratio 2.0 must not count).
RATIO = torch.tensor([[1.5, 0.5, 1.0], [1.1, 0.7, 2.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADV = torch.tensor([1.0, -2.0])
# eps = 0.2. Row 0 (A = 1): -min(1.5, 1.2) = -1.2, -min(0.5, 0.8) = -0.5, -1.0 -> sum -2.7, mean -0.9.
# Row 1 (A = -2): -min(-2.2, -2.2) = 2.2, -min(-1.4, 0.8 * -2 = -1.6) = 1.6 -> sum 3.8, mean 1.9.
HAND = {"grpo": (-0.9 + 1.9) / 2, "bnpo": 1.1 / 5, "dapo": 1.1 / 10, "dr_grpo": 1.1 / (2 * 4)}


@pytest.mark.parametrize("loss_type", list(HAND))
def test_aggregations_by_hand(loss_type):
    loss, m = grpo_loss(
        RATIO.log(),
        ADV,
        MASK,
        old_logprobs=torch.zeros(2, 3),
        loss_type=loss_type,
        max_completion_length=4,
        num_items_in_batch=10,
    )
    assert loss.item() == pytest.approx(HAND[loss_type], rel=1e-6)
    # low clip: ratio 0.7 < 0.8 with A < 0; high clip: ratio 1.5 > 1.2 with A > 0; of 5 real tokens
    assert m["clip_ratio/low_mean"].item() == pytest.approx(0.2)
    assert m["clip_ratio/high_mean"].item() == pytest.approx(0.2)
    assert m["clip_ratio/region_mean"].item() == pytest.approx(0.4)
    assert "kl" not in m


def test_clip_higher():
    # eps_high = 0.6: ratio 1.5 is inside [0.8, 1.6], so row 0 sums -1.5 - 0.5 - 1.0 = -3.0; bnpo (-3.0 + 3.8) / 5
    loss, m = grpo_loss(RATIO.log(), ADV, MASK, torch.zeros(2, 3), epsilon_high=0.6, loss_type="bnpo")
    assert loss.item() == pytest.approx(0.8 / 5, rel=1e-6)
    assert m["clip_ratio/high_mean"].item() == 0.0


def test_k3_kl_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -4.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -2.2, 0.0]])
    k3 = [[math.exp(r - p) - (r - p) - 1 for p, r in zip(pr, rr)] for pr, rr in zip(logp.tolist(), ref.tolist())]
    kl_mean = (sum(k3[0]) + k3[1][0] + k3[1][1]) / 5
    base, _ = grpo_loss(logp, ADV, MASK, loss_type="bnpo")
    loss, m = grpo_loss(logp, ADV, MASK, ref_logprobs=ref, beta=0.04, loss_type="bnpo")
    assert m["kl"].item() == pytest.approx(kl_mean, rel=1e-6)
    assert loss.item() == pytest.approx(base.item() + 0.04 * kl_mean, rel=1e-6)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(logp, ADV, MASK, beta=0.1)


def test_on_policy_value_and_gradient():
    # pi_old = sg[pi]: the value is -mean of A over tokens, the gradient -A_i m_{i,t} / normaliser
    logp = torch.randn(2, 3, requires_grad=True)
    loss, _ = grpo_loss(logp, ADV, MASK, loss_type="bnpo")
    assert loss.item() == pytest.approx(-(3 * 1.0 + 2 * -2.0) / 5)
    loss.backward()
    torch.testing.assert_close(logp.grad, -ADV[:, None] * MASK / 5)
    logp.grad = None
    loss, _ = grpo_loss(logp, ADV, MASK, loss_type="grpo")
    loss.backward()
    torch.testing.assert_close(logp.grad, -ADV[:, None] * MASK / MASK.sum(1, keepdim=True) / 2)


def test_bad_loss_type():
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(torch.zeros(2, 3), ADV, MASK, loss_type="ppo")
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(torch.zeros(2, 3), ADV, MASK, loss_type="dr_grpo")
