"""The exact torch path of ltune.kernels against the float64 references in ltune.kernels.reference."""

from __future__ import annotations

import pytest
import torch

import ltune.kernels as K
from ltune.kernels import dispatch
from ltune.kernels.reference import (
    reference_linear_token_logprobs,
    reference_odds_ratio_loss,
    reference_token_logprobs,
)

IGNORE = -100
# (forward atol, grad atol, grad rtol): the forward always computes in float32 from the given values; gradients come
# back in the input dtype, so bf16 gradients carry bf16 rounding.
TOL = {
    torch.float64: (1e-10, 1e-10, 1e-8),
    torch.float32: (2e-5, 2e-5, 1e-4),
    torch.bfloat16: (2e-5, 1e-2, 2e-2),
}
SHAPES = [(37,), (1,), (3, 5)]  # token shapes: odd N, a single row, leading batch dims


def _targets(shape, vocab, *, ignore_every=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, vocab, shape, generator=gen)
    flat = t.view(-1)
    flat[1::ignore_every] = IGNORE  # row 0 stays valid: the single-row case is a real row (all-ignored: own test)
    return t


def _close(actual, expected, atol, rtol=0.0):
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_forward_backward(dtype, shape, temperature):
    vocab = 131
    torch.manual_seed(1)
    logits = (3 * torch.randn(*shape, vocab)).to(dtype).requires_grad_()
    targets = _targets(shape, vocab, ignore_every=3)
    before = logits.detach().clone()
    version = logits._version
    out = K.token_logprobs(logits, targets, temperature=temperature, with_entropy=True, with_argmax=True, impl="torch")
    ref_in = logits.detach().double().requires_grad_()
    ref_lp, ref_ent, ref_hit = reference_token_logprobs(ref_in, targets, temperature=temperature)
    fwd_atol, grad_atol, grad_rtol = TOL[dtype]
    assert out.logprobs.dtype == torch.float32 and out.entropy.dtype == torch.float32
    assert out.logprobs.shape == targets.shape == out.entropy.shape == out.argmax_hit.shape
    _close(out.logprobs, ref_lp.detach(), max(fwd_atol, 1e-6), 1e-6)
    _close(out.entropy, ref_ent.detach(), max(fwd_atol, 1e-6), 1e-6)
    assert torch.equal(out.argmax_hit, ref_hit)
    ignored = targets == IGNORE
    assert (out.logprobs[ignored] == 0).all() and (out.entropy[ignored] == 0).all()
    assert not out.argmax_hit[ignored].any() and not out.entropy.requires_grad
    g = torch.randn(shape).double()  # an arbitrary upstream gradient (float32-representable), not sum()
    (grad,) = torch.autograd.grad((out.logprobs * g.float()).sum(), logits)
    (ref_grad,) = torch.autograd.grad((ref_lp * g).sum(), ref_in)
    assert grad.dtype == dtype
    _close(grad, ref_grad, grad_atol, grad_rtol)
    assert torch.equal(logits.detach(), before) and logits._version == version


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("chunk_size", [8, 4096])
def test_linear_token_logprobs_forward_backward(dtype, shape, use_bias, chunk_size):
    hdim, vocab, temperature = 19, 131, 0.8
    torch.manual_seed(2)
    hidden = torch.randn(*shape, hdim).to(dtype).requires_grad_()
    weight = (0.5 * torch.randn(vocab, hdim)).to(dtype).requires_grad_()
    bias = (0.3 * torch.randn(vocab)).to(dtype).requires_grad_() if use_bias else None
    targets = _targets(shape, vocab)
    out = K.linear_token_logprobs(
        hidden,
        weight,
        targets,
        bias=bias,
        temperature=temperature,
        with_entropy=True,
        with_argmax=True,
        chunk_size=chunk_size,
        impl="torch",
    )
    leaves = [hidden, weight] + ([bias] if use_bias else [])
    ref_leaves = [x.detach().double().requires_grad_() for x in leaves]
    ref_lp, ref_ent, ref_hit = reference_linear_token_logprobs(
        ref_leaves[0], ref_leaves[1], targets, bias=ref_leaves[2] if use_bias else None, temperature=temperature
    )
    fwd_atol, grad_atol, grad_rtol = TOL[dtype]
    assert out.logprobs.dtype == torch.float32 and out.entropy.dtype == torch.float32
    assert out.logprobs.shape == targets.shape
    _close(out.logprobs, ref_lp.detach(), max(fwd_atol, 2e-6), 1e-5)
    _close(out.entropy, ref_ent.detach(), max(fwd_atol, 2e-6), 1e-5)
    assert torch.equal(out.argmax_hit, ref_hit)
    assert (out.logprobs[targets == IGNORE] == 0).all()
    g = torch.randn(shape).double()
    grads = torch.autograd.grad((out.logprobs * g.float()).sum(), leaves)
    ref_grads = torch.autograd.grad((ref_lp * g).sum(), ref_leaves)
    for leaf, grad, ref_grad in zip(leaves, grads, ref_grads):
        assert grad.dtype == leaf.dtype
        _close(grad, ref_grad, grad_atol, grad_rtol)


@pytest.mark.parametrize("impl_fn", ["token", "linear"])
def test_all_targets_ignored(impl_fn):
    torch.manual_seed(3)
    hidden = torch.randn(2, 7, 11, requires_grad=True)
    weight = torch.randn(29, 11, requires_grad=True)
    targets = torch.full((2, 7), IGNORE)
    if impl_fn == "token":
        logits = (hidden @ weight.T).detach().requires_grad_()
        out = K.token_logprobs(logits, targets, with_entropy=True, with_argmax=True, impl="torch")
        leaves = [logits]
    else:
        out = K.linear_token_logprobs(hidden, weight, targets, with_entropy=True, with_argmax=True, impl="torch")
        leaves = [hidden, weight]
    assert out.logprobs.shape == (2, 7) and (out.logprobs == 0).all() and (out.entropy == 0).all()
    assert not out.argmax_hit.any()
    for grad in torch.autograd.grad(out.logprobs.sum(), leaves):
        assert (grad == 0).all()


def test_linear_frozen_weight_and_tied_embedding():
    """Only the grads that are asked for are computed; a tied embedding accumulates both uses."""
    torch.manual_seed(4)
    vocab, hdim = 53, 13
    weight = torch.randn(vocab, hdim, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, vocab, (3, 9))
    targets = torch.randint(0, vocab, (3, 9))
    targets[0, :4] = IGNORE
    g = torch.randn(3, 9).double()  # float32-representable: the float32 output passes its grad as float32

    def run(fn):
        hidden = torch.tanh(weight[ids])  # embedding lookup with the same (tied) weight
        lp = fn(hidden)
        return torch.autograd.grad((lp * g).sum(), weight)[0]

    ours = run(lambda h: K.linear_token_logprobs(h, weight, targets, chunk_size=5, impl="torch").logprobs.double())
    ref = run(lambda h: reference_linear_token_logprobs(h, weight, targets)[0])
    _close(ours, ref, 1e-10, 1e-8)

    frozen = weight.detach()
    hidden = torch.randn(3, 9, hdim, dtype=torch.float64, requires_grad=True)
    lp = K.linear_token_logprobs(hidden, frozen, targets, impl="torch").logprobs
    (grad_h,) = torch.autograd.grad((lp.double() * g).sum(), hidden)
    ref_h = torch.autograd.grad((reference_linear_token_logprobs(hidden, frozen, targets)[0] * g).sum(), hidden)[0]
    _close(grad_h, ref_h, 1e-10, 1e-8)


def _saved_numels(fn):
    sizes: list[tuple[int, int]] = []

    def pack(t):
        sizes.append((t.numel(), t.data_ptr()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sizes


def test_no_tokens_by_vocab_tensor_saved():
    """The linear path saves O(tokens) state besides its inputs: nothing with N x V elements."""
    n, hdim, vocab = 301, 16, 1031
    torch.manual_seed(5)
    hidden = torch.randn(n, hdim, requires_grad=True)
    weight = torch.randn(vocab, hdim, requires_grad=True)
    targets = torch.randint(0, vocab, (n,))
    out, sizes = _saved_numels(
        lambda: K.linear_token_logprobs(hidden, weight, targets, chunk_size=64, impl="torch").logprobs
    )
    assert sizes and max(s for s, _ in sizes) < n * vocab // 4
    out.sum().backward()
    assert hidden.grad.shape == hidden.shape and weight.grad.shape == weight.shape

    logits = torch.randn(n, vocab, requires_grad=True)  # (a) keeps the caller's logits, but never a copy of them
    _, sizes = _saved_numels(lambda: K.token_logprobs(logits, targets, impl="torch").logprobs)
    big = [ptr for numel, ptr in sizes if numel >= n * vocab // 4]
    assert big == [logits.data_ptr()]


def test_linear_large_vocab_small_chunks():
    """A full float32 [N, V] would be 128 MiB here; the chunked path only ever holds chunk_size x V."""
    n, hdim, vocab = 1024, 32, 32768
    torch.manual_seed(6)
    hidden = torch.randn(n, hdim, requires_grad=True)
    weight = (0.1 * torch.randn(vocab, hdim)).requires_grad_()
    targets = torch.randint(0, vocab, (n,))
    lp = K.linear_token_logprobs(hidden, weight, targets, chunk_size=64, impl="torch").logprobs
    rows = torch.arange(0, n, 97)
    ref = reference_linear_token_logprobs(hidden[rows].detach().double(), weight.detach().double(), targets[rows])[0]
    _close(lp[rows].detach(), ref, 1e-5, 1e-5)
    lp.sum().backward()
    assert torch.isfinite(weight.grad).all() and torch.isfinite(hidden.grad).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_odds_ratio_loss(dtype):
    torch.manual_seed(7)
    chosen = -torch.rand(9, dtype=torch.float64) * 3 - 1e-3
    rejected = -torch.rand(9, dtype=torch.float64) * 3 - 1e-3
    c = chosen.to(dtype).requires_grad_()
    r = rejected.to(dtype).requires_grad_()
    loss, log_odds = K.odds_ratio_loss(c, r, impl="torch")
    assert loss.dtype == torch.float32 and log_odds.dtype == torch.float32
    rc, rr = c.detach().double().requires_grad_(), r.detach().double().requires_grad_()
    ref_loss, ref_odds = reference_odds_ratio_loss(rc, rr)
    _close(loss, ref_loss.detach(), 1e-5, 1e-5)
    _close(log_odds, ref_odds.detach(), 1e-5, 1e-5)
    g1, g2 = torch.randn(9).double(), torch.randn(9).double()
    grads = torch.autograd.grad((loss * g1.float()).sum() + (log_odds * g2.float()).sum(), [c, r])
    ref_grads = torch.autograd.grad((ref_loss * g1).sum() + (ref_odds * g2).sum(), [rc, rr])
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    for grad, ref_grad in zip(grads, ref_grads):
        assert grad.dtype == dtype
        _close(grad, ref_grad, tol, tol)


def test_odds_ratio_loss_stable_near_zero():
    c = torch.tensor([0.0, -1e-9, 1e-7, -1e-3, -30.0], requires_grad=True)
    r = torch.tensor([-2.0, 0.0, -1e-12, -1e-3, -0.5], requires_grad=True)
    loss, log_odds = K.odds_ratio_loss(c, r, impl="torch")
    (loss.sum() + log_odds.sum()).backward()
    for t in (loss, log_odds, c.grad, r.grad):
        assert torch.isfinite(t).all()


def test_dispatch(monkeypatch):
    x = torch.zeros(2, 3)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert dispatch.resolve_impl(None, x) == "torch"  # CPU tensors -> torch under auto
    assert dispatch.resolve_impl("auto", x) == "torch"
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    assert dispatch.resolve_impl(None, x) == "torch"
    monkeypatch.setenv(dispatch.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="LTUNE_KERNELS"):
        dispatch.resolve_impl(None, x)
    with pytest.raises(ValueError, match="impl"):
        dispatch.resolve_impl("cuda", x)
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="not installed"):
        K.token_logprobs(torch.randn(2, 5), torch.tensor([1, 2]), impl="triton")
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="CUDA"):
        dispatch.resolve_impl("triton", x)


def test_bad_arguments():
    logits, targets = torch.randn(4, 7), torch.tensor([1, 2, 3, 4])
    with pytest.raises(ValueError, match="temperature"):
        K.token_logprobs(logits, targets, temperature=0.0)
    with pytest.raises(ValueError, match="disagree"):
        K.token_logprobs(logits, targets[:3])
    with pytest.raises(ValueError, match="weight"):
        K.linear_token_logprobs(torch.randn(4, 5), torch.randn(7, 6), targets)
