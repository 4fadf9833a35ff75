"""Cases for the Triton kernels, run under ``TRITON_INTERPRET=1`` in a subprocess by ``test_triton_interpret.py``.

Run directly: ``TRITON_INTERPRET=1 python tests/kernels/triton_interpret_cases.py [out.json] [name-substring]``.
Importing this module never imports ``triton`` (the pytest process only reads the case names); the kernels import it
lazily when a case runs. Every kernel output is allocated poisoned (NaN, or 2 for int8 flags) so a case fails if
any element is left unwritten.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import traceback
from collections.abc import Callable

import torch

import ltune.kernels as K
from ltune.kernels.reference import (
    reference_linear_token_logprobs,
    reference_odds_ratio_loss,
    reference_token_logprobs,
)

IGNORE = -100
# forward atol, gradient atol, gradient rtol (gradients come back in the input dtype)
TOL = {torch.float32: (2e-5, 2e-5, 1e-4), torch.bfloat16: (2e-5, 1e-2, 2e-2)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CASES: dict[str, Callable[[], None]] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


@contextlib.contextmanager
def poisoned_outputs():
    """Allocate every kernel output poisoned; on exit, check that the kernels overwrote every element."""
    from ltune.kernels import triton_logprobs, triton_orpo

    made: list[torch.Tensor] = []

    def empty(shape, dtype, device):
        t = torch.empty(shape, dtype=dtype, device=device)
        t.fill_(float("nan") if dtype.is_floating_point else 2)
        made.append(t)
        return t

    saved = triton_logprobs._empty, triton_orpo._empty
    triton_logprobs._empty = triton_orpo._empty = empty
    try:
        yield
    finally:
        triton_logprobs._empty, triton_orpo._empty = saved
    for t in made:
        bad = torch.isnan(t) if t.dtype.is_floating_point else (t == 2)
        assert not bad.any(), f"kernel left {int(bad.sum())} of {t.numel()} output elements unwritten"


def _targets(n: int, vocab: int, ignore_every: int = 3, seed: int = 0) -> torch.Tensor:
    t = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))
    t[1::ignore_every] = IGNORE  # row 0 stays valid, so the single-row cases are real rows
    return t


def _close(actual, expected, atol, rtol=0.0, what=""):
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def _token_case(dtype, n, vocab, temperature, block_v, via_dispatch=False):
    from ltune.kernels.triton_logprobs import token_logprobs_triton

    torch.manual_seed(n + vocab)
    logits = (3 * torch.randn(n, vocab)).to(dtype).requires_grad_()
    before = logits.detach().clone()
    targets = _targets(n, vocab)
    with poisoned_outputs():
        if via_dispatch:
            out = K.token_logprobs(
                logits, targets, temperature=temperature, with_entropy=True, with_argmax=True, impl="triton"
            )
            lp, ent, hit = out
        else:
            lp, ent, hit = token_logprobs_triton(
                logits,
                targets,
                temperature=temperature,
                ignore_index=IGNORE,
                with_entropy=True,
                with_argmax=True,
                block_v=block_v,
            )
        g = torch.randn(n)
        (grad,) = torch.autograd.grad((lp * g).sum(), logits)
    ref_in = logits.detach().double().requires_grad_()
    r_lp, r_ent, r_hit = reference_token_logprobs(ref_in, targets, temperature=temperature)
    (r_grad,) = torch.autograd.grad((r_lp * g.double()).sum(), ref_in)
    fwd, gatol, grtol = TOL[dtype]
    assert lp.dtype == ent.dtype == torch.float32 and hit.dtype == torch.bool and grad.dtype == dtype
    _close(lp, r_lp.detach(), fwd, 1e-5, "logprobs")
    _close(ent, r_ent.detach(), fwd, 1e-5, "entropy")
    assert torch.equal(hit, r_hit), "argmax_hit"
    _close(grad, r_grad, gatol, grtol, "grad_logits")
    assert torch.equal(logits.detach(), before), "caller's logits were modified"


for (dname, dtype), (n, vocab), temperature, block_v in itertools.product(
    DTYPES.items(), [(37, 131), (1, 131), (5, 64)], [1.0, 0.7], [32, None]
):
    name = f"token[{dname}-N{n}-V{vocab}-T{temperature}-B{block_v or 'auto'}]"
    CASES[name] = lambda d=dtype, n=n, v=vocab, t=temperature, b=block_v: _token_case(d, n, v, t, b)
CASES["token-dispatch[bf16]"] = lambda: _token_case(torch.bfloat16, 9, 77, 0.9, None, via_dispatch=True)


def _linear_case(dtype, n, use_bias, chunk_size, block_v, leading=()):
    hdim, vocab, temperature = 19, 131, 0.8
    torch.manual_seed(n + chunk_size)
    hidden = torch.randn(*leading, n, hdim).to(dtype).requires_grad_()
    weight = (0.5 * torch.randn(vocab, hdim)).to(dtype).requires_grad_()
    bias = (0.3 * torch.randn(vocab)).to(dtype).requires_grad_() if use_bias else None
    targets = _targets(hidden[..., 0].numel(), vocab, ignore_every=4).view(hidden.shape[:-1])
    leaves = [hidden, weight] + ([bias] if use_bias else [])
    with poisoned_outputs():
        if block_v is None:
            lp, ent, hit = K.linear_token_logprobs(
                hidden,
                weight,
                targets,
                bias=bias,
                temperature=temperature,
                with_entropy=True,
                with_argmax=True,
                chunk_size=chunk_size,
                impl="triton",
            )
        else:
            from ltune.kernels.triton_linear import linear_token_logprobs_triton

            lp, ent, hit = linear_token_logprobs_triton(
                hidden.view(-1, hdim),
                weight,
                targets.view(-1),
                bias=bias,
                temperature=temperature,
                ignore_index=IGNORE,
                with_entropy=True,
                with_argmax=True,
                chunk_size=chunk_size,
                block_v=block_v,
            )
            lp, ent, hit = (x.view(targets.shape) for x in (lp, ent, hit))
        g = torch.randn(targets.shape)
        grads = torch.autograd.grad((lp * g).sum(), leaves)
    ref_leaves = [x.detach().double().requires_grad_() for x in leaves]
    r_lp, r_ent, r_hit = reference_linear_token_logprobs(
        ref_leaves[0], ref_leaves[1], targets, bias=ref_leaves[2] if use_bias else None, temperature=temperature
    )
    r_grads = torch.autograd.grad((r_lp * g.double()).sum(), ref_leaves)
    fwd, gatol, grtol = TOL[dtype]
    assert lp.dtype == torch.float32 and lp.shape == targets.shape
    _close(lp, r_lp.detach(), max(fwd, 2e-6), 1e-5, "logprobs")
    _close(ent, r_ent.detach(), max(fwd, 2e-6), 1e-5, "entropy")
    assert torch.equal(hit, r_hit), "argmax_hit"
    for name, leaf, grad, r_grad in zip(("hidden", "weight", "bias"), leaves, grads, r_grads):
        assert grad.dtype == leaf.dtype, name
        _close(grad, r_grad, gatol, grtol, f"grad_{name}")


for (dname, dtype), use_bias, (chunk, block_v) in itertools.product(
    DTYPES.items(), [False, True], [(8, 32), (4096, None)]
):
    name = f"linear[{dname}-bias{int(use_bias)}-chunk{chunk}-B{block_v or 'auto'}]"
    CASES[name] = lambda d=dtype, b=use_bias, c=chunk, bv=block_v: _linear_case(d, 37, b, c, bv)
CASES["linear-single-row[bf16]"] = lambda: _linear_case(torch.bfloat16, 1, True, 8, None)
CASES["linear-leading-dims[fp32]"] = lambda: _linear_case(torch.float32, 7, False, 5, None, leading=(3,))


@case("all-ignored[token+linear]")
def _all_ignored():
    hidden = torch.randn(6, 11, requires_grad=True)
    weight = torch.randn(29, 11, requires_grad=True)
    logits = (hidden @ weight.T).detach().requires_grad_()
    targets = torch.full((6,), IGNORE)
    with poisoned_outputs():
        a = K.token_logprobs(logits, targets, with_entropy=True, with_argmax=True, impl="triton")
        b = K.linear_token_logprobs(hidden, weight, targets, with_entropy=True, with_argmax=True, impl="triton")
        grads = torch.autograd.grad(a.logprobs.sum() + b.logprobs.sum(), [logits, hidden, weight])
    for out in (a, b):
        assert (out.logprobs == 0).all() and (out.entropy == 0).all() and not out.argmax_hit.any()
    for grad in grads:
        assert (grad == 0).all()


@case("triton-matches-torch-path[fp32]")
def _matches_torch():
    torch.manual_seed(11)
    logits = torch.randn(13, 257)
    targets = _targets(13, 257)
    a = K.token_logprobs(logits, targets, temperature=1.3, with_entropy=True, with_argmax=True, impl="triton")
    b = K.token_logprobs(logits, targets, temperature=1.3, with_entropy=True, with_argmax=True, impl="torch")
    _close(a.logprobs, b.logprobs, 2e-6, 1e-6, "logprobs")
    _close(a.entropy, b.entropy, 2e-6, 1e-6, "entropy")
    assert torch.equal(a.argmax_hit, b.argmax_hit)


@case("argmax-ties-first-index")
def _argmax_ties():
    from ltune.kernels.triton_logprobs import token_logprobs_triton

    logits = torch.zeros(3, 70)
    logits[:, 5] = logits[:, 40] = 2.0  # tie across two blocks of 32: the first index wins, as in torch.argmax
    targets = torch.tensor([5, 40, 6])
    _, _, hit = token_logprobs_triton(
        logits, targets, temperature=1.0, ignore_index=IGNORE, with_entropy=False, with_argmax=True, block_v=32
    )
    assert hit.tolist() == [True, False, False]


def _orpo_case(dtype):
    torch.manual_seed(7)
    chosen = (-torch.rand(300) * 3 - 1e-3).to(dtype).requires_grad_()
    rejected = (-torch.rand(300) * 3 - 1e-3).to(dtype).requires_grad_()
    with poisoned_outputs():
        loss, odds = K.odds_ratio_loss(chosen, rejected, impl="triton")
        g1, g2 = torch.randn(300), torch.randn(300)
        grads = torch.autograd.grad((loss * g1).sum() + (odds * g2).sum(), [chosen, rejected])
    rc, rr = chosen.detach().double().requires_grad_(), rejected.detach().double().requires_grad_()
    r_loss, r_odds = reference_odds_ratio_loss(rc, rr)
    r_grads = torch.autograd.grad((r_loss * g1.double()).sum() + (r_odds * g2.double()).sum(), [rc, rr])
    assert loss.dtype == odds.dtype == torch.float32
    _close(loss, r_loss.detach(), 1e-5, 1e-5, "loss")
    _close(odds, r_odds.detach(), 1e-5, 1e-5, "log_odds")
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    for grad, r_grad, leaf in zip(grads, r_grads, (chosen, rejected)):
        assert grad.dtype == leaf.dtype
        _close(grad, r_grad, tol, tol, "grad")


CASES["orpo[fp32]"] = lambda: _orpo_case(torch.float32)
CASES["orpo[bf16]"] = lambda: _orpo_case(torch.bfloat16)


@case("orpo-stable-near-zero")
def _orpo_stable():
    c = torch.tensor([0.0, -1e-9, 1e-7, -1e-3, -30.0, -0.69, -0.70], requires_grad=True)
    r = torch.tensor([-2.0, 0.0, -1e-12, -1e-3, -0.5, -0.70, -0.69], requires_grad=True)
    loss, odds = K.odds_ratio_loss(c, r, impl="triton")
    ref_loss, ref_odds = K.odds_ratio_loss(c, r, impl="torch")
    grads = torch.autograd.grad(loss.sum() + odds.sum(), [c, r])
    ref_grads = torch.autograd.grad(ref_loss.sum() + ref_odds.sum(), [c, r])
    for t in (loss, odds, *grads):
        assert torch.isfinite(t).all()
    _close(odds, ref_odds, 1e-5, 1e-5, "log_odds")
    for grad, ref in zip(grads, ref_grads):
        _close(grad, ref, 1e-3, 1e-5, "grad")


def main(argv: list[str]) -> int:
    assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1 before running these cases"
    out_path = argv[1] if len(argv) > 1 else None
    pattern = argv[2] if len(argv) > 2 else ""
    results = {}
    for name, fn in CASES.items():
        if pattern not in name:
            continue
        try:
            fn()
            results[name] = "ok"
        except Exception:  # noqa: BLE001 - every failure is reported to the pytest process
            results[name] = traceback.format_exc()
    if out_path:
        with open(out_path, "w") as f:
            json.dump(results, f)
    for name, status in results.items():
        print(("ok   " if status == "ok" else "FAIL ") + name + ("" if status == "ok" else "\n" + status))
    return int(any(status != "ok" for status in results.values()))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
