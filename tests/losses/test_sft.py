import math

import torch

from ltune.losses.sft import sft_loss


def test_token_mean_nll_by_hand():
    # two sequences; scored tokens have p = 0.5, 0.25 (seq 0) and 0.125 (seq 1); one unscored token (p=0.9)
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.125, 0.9, 0.9]]))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    hit = torch.tensor([[True, False, True], [True, True, True]])
    loss, m = sft_loss(lp, mask, hit)
    expected = (math.log(2) + math.log(4) + math.log(8)) / 3  # = 2 ln 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert m["tokens"].item() == 3
    assert math.isclose(m["token_accuracy"].item(), 2 / 3, rel_tol=1e-6)


def test_gradient_only_on_scored_tokens():
    lp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    sft_loss(lp, mask)[0].backward()
    assert torch.equal(lp.grad, -mask.float() / 3)
