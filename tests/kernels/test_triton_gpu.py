"""Compiled Triton kernels on a CUDA device (skipped without one): realistic vocab, bf16, against float64.

The interpreter tests cover every kernel on CPU; these add what only a GPU exercises: compiled code, large blocks,
the mixed-precision cuBLAS branch of the chunked linear path and the Qwen-sized vocabulary.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import ltune.kernels as K
from ltune.kernels.reference import reference_linear_token_logprobs, reference_token_logprobs

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("triton") is None, reason="needs CUDA and triton"
)


def _targets(n, vocab, device):
    t = torch.randint(0, vocab, (n,), device=device)
    t[::5] = -100
    return t


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [151936, 32000, 1000])
def test_token_logprobs_cuda(dtype, vocab):
    torch.manual_seed(0)
    n = 67
    logits = (4 * torch.randn(n, vocab, device="cuda")).to(dtype).requires_grad_()
    targets = _targets(n, vocab, "cuda")
    out = K.token_logprobs(logits, targets, temperature=0.9, with_entropy=True, with_argmax=True)
    ref_in = logits.detach().double().requires_grad_()
    r_lp, r_ent, r_hit = reference_token_logprobs(ref_in, targets, temperature=0.9)
    torch.testing.assert_close(out.logprobs.double(), r_lp.detach(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out.entropy.double(), r_ent.detach(), atol=1e-4, rtol=1e-5)
    assert torch.equal(out.argmax_hit, r_hit)
    g = torch.randn(n, device="cuda")
    (grad,) = torch.autograd.grad((out.logprobs * g).sum(), logits)
    (r_grad,) = torch.autograd.grad((r_lp * g.double()).sum(), ref_in)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(grad.double(), r_grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_token_logprobs_cuda(dtype):
    torch.manual_seed(1)
    n, hdim, vocab = 301, 128, 32003
    hidden = torch.randn(n, hdim, device="cuda").to(dtype).requires_grad_()
    weight = (0.05 * torch.randn(vocab, hdim, device="cuda")).to(dtype).requires_grad_()
    bias = (0.1 * torch.randn(vocab, device="cuda")).to(dtype).requires_grad_()
    targets = _targets(n, vocab, "cuda")
    out = K.linear_token_logprobs(hidden, weight, targets, bias=bias, temperature=0.7, chunk_size=64)
    leaves = [hidden, weight, bias]
    ref_leaves = [x.detach().double().requires_grad_() for x in leaves]
    r_lp = reference_linear_token_logprobs(*ref_leaves[:2], targets, bias=ref_leaves[2], temperature=0.7)[0]
    torch.testing.assert_close(out.logprobs.double(), r_lp.detach(), atol=2e-4, rtol=1e-4)
    g = torch.randn(n, device="cuda")
    grads = torch.autograd.grad((out.logprobs * g).sum(), leaves)
    r_grads = torch.autograd.grad((r_lp * g.double()).sum(), ref_leaves)
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-4
    for grad, r_grad in zip(grads, r_grads):
        torch.testing.assert_close(grad.double(), r_grad, atol=tol, rtol=tol)


def test_odds_ratio_loss_cuda():
    c = -torch.rand(1000, device="cuda") * 3
    r = -torch.rand(1000, device="cuda") * 3
    a = K.odds_ratio_loss(c, r)
    b = K.odds_ratio_loss(c, r, impl="torch")
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
