"""Judges: the preference by hand from the model's own log-probs, order debiasing, d-RLAIF rating, and the
OpenAI-compatible client against a real HTTP server on 127.0.0.1 that serves the same micro model."""

import math
import os
import subprocess
import sys

import pytest
import torch

from ltune.judges import APIJudge, LMJudge, PairJudge, VerifierJudge
from tests.conftest import micro_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["What is 2+2?", "Reverse the letters of abc."]
A = ["2+2=4. The answer is 4.", "reverse(abc)=cba. The answer is cba."]
B = ["2+2=5. The answer is 5.", "reverse(abc)=cbb. The answer is cbb."]


def _hand_p1(model, tok, context):
    """P("1") / (P("1") + P("2")) from the logits at the end of the context, computed directly."""
    ids = torch.tensor([tok(context, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        lp = model(ids).logits[0, -1].float().log_softmax(-1)
    one, two = tok("1", add_special_tokens=False)["input_ids"][0], tok("2", add_special_tokens=False)["input_ids"][0]
    return torch.softmax(torch.stack([lp[one], lp[two]]), 0)[0].item()


def test_lm_judge_averages_both_orders_by_hand():
    judge = LMJudge(
        backbone=micro_backbone(), few_shot=[{"prompt": "1+1?", "response_1": "2", "response_2": "3", "preferred": "1"}]
    )
    p, m = judge.preference(PROMPTS, A, B)
    model, tok = judge.model, judge.backbone.tokenizer
    for i in range(2):
        first = _hand_p1(model, tok, judge.context(PROMPTS[i], A[i], B[i]))
        swapped = _hand_p1(model, tok, judge.context(PROMPTS[i], B[i], A[i]))
        assert p[i].item() == pytest.approx(0.5 * (first + 1 - swapped), abs=1e-5)
    assert "1+1?" in judge.context("q", "a", "b") and 0 <= m["p_first_position"] <= 1 and m["entropy"] > 0
    q, _ = judge.preference(PROMPTS, B, A)  # swapping the candidates mirrors the debiased label exactly
    torch.testing.assert_close(q, 1 - p, atol=1e-6, rtol=0)


class _Biased(PairJudge):
    """Always 80% for slot 1: the debiased label must be 0.5 and the bias monitor must show it."""

    def option_probs(self, contexts):
        return torch.tensor([[0.8, 0.2]] * len(contexts))


def test_position_bias_cancels():
    p, m = _Biased().preference(["q"] * 3, ["a"] * 3, ["b"] * 3)
    torch.testing.assert_close(p, torch.full((3,), 0.5))
    assert m["p_first_position"] == 1.0


def test_chain_of_thought_and_rating():
    judge = LMJudge(backbone=micro_backbone(), chain_of_thought=True, rationale_tokens=4)
    p, _ = judge.preference(PROMPTS, A, B)
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
    r = judge.score(PROMPTS, A)
    # by hand for the first: renormalised P("k/10"), expected k, rescaled
    ctx = f"{judge.rating_preamble}\n\nQuestion: {PROMPTS[0]}\nResponse: {A[0]}\nRating: "
    tok, model = judge.backbone.tokenizer, judge.model
    lps = []
    for k in range(1, 11):
        c, o = tok(ctx, add_special_tokens=False)["input_ids"], tok(f"{k}/10", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = model(torch.tensor([c + o])).logits[0].float().log_softmax(-1)
        lps.append(sum(lp[len(c) - 1 + j, t].item() for j, t in enumerate(o)))
    probs = torch.tensor(lps).softmax(0)
    expected = (probs * torch.arange(1, 11)).sum().item()
    assert r[0].item() == pytest.approx((expected - 5.5) / 4.5, abs=1e-5)
    assert (r.abs() <= 1).all()


@pytest.fixture
def server():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_api_judge_matches_the_local_judge_over_http(server):
    api = APIJudge(model="tiny-micro", base_url=server, top_logprobs=400)  # the whole byte vocabulary
    local = LMJudge(backbone=micro_backbone())
    p_api, m_api = api.preference(PROMPTS, A, B)
    p_local, m_local = local.preference(PROMPTS, A, B)
    torch.testing.assert_close(p_api, p_local, atol=1e-4, rtol=0)
    assert m_api["p_first_position"] == m_local["p_first_position"]
    with pytest.raises(ValueError, match="top_logprobs"):
        APIJudge(model="tiny-micro", base_url=server, top_logprobs=1, preamble="zzzz").preference(PROMPTS, A, B)


def test_verifier_judge_rates_by_the_solved_reference_and_leaves_unreadable_questions_unjudged():
    judge = VerifierJudge(correct=9.0, wrong=2.0)
    first, second = judge.rate_pair(PROMPTS + ["Tell a joke."], A + ["A joke."], B + ["Another."], template="unused")
    assert first[:2] == [9.0, 9.0] and second[:2] == [2.0, 2.0]  # A is right, B is wrong (by hand: 4, cba)
    assert math.isnan(first[2]) and math.isnan(second[2])  # no phrasing of the embedded tasks: unjudged
    custom = VerifierJudge(solver=lambda q: "42")
    assert custom.verdicts(["anything"], ["The answer is 42."]) == [10.0]
    assert custom.verdicts(["anything"], ["no final answer"]) == [1.0]
    reward = judge.score(PROMPTS + ["Tell a joke."], A[:1] + B[1:2] + ["A joke."])  # right, wrong, unreadable
    assert reward[:2].tolist() == [1.0, -1.0] and math.isnan(reward[2])  # LMJudge.score's [-1, 1] scale


def test_a_judge_given_no_backbone_judges_with_its_owners():
    """`backbone: null` in a config: the owning run binds the policy's backbone (so one model fragment moves both)."""
    policy, own = micro_backbone(), micro_backbone()
    judge = LMJudge()
    assert judge.bind(policy).backbone is policy and judge.bind(own).backbone is policy  # the first binding stays
    assert LMJudge(backbone=own).bind(policy).backbone is own  # a judge given a backbone keeps it
    assert VerifierJudge().bind(policy) is not None  # judges without a model ignore it


def test_rlaif_binds_its_judge_to_the_policy_backbone():
    from ltune import RLAIF

    model = RLAIF(backbone=micro_backbone(), judge=LMJudge())
    model.configure_model()
    assert model.judge.backbone is model.backbone


def test_option_scores_share_each_context_and_equal_one_forward_per_option(monkeypatch):
    """The K options of a context run as one packed sequence (the context once): the same log-probs, in float64, as
    a separate forward of every context + option."""
    import ltune.packing as sp
    from ltune.forward import completion_logprobs
    from ltune.judges.local import _next_token_logprobs
    from ltune.kernels import IGNORE_INDEX

    bb = micro_backbone()
    model, tok = bb.load_frozen().double(), bb.tokenizer
    packed = []
    real = sp.shared_prefix_hidden
    monkeypatch.setattr(sp, "shared_prefix_hidden", lambda *a, **k: packed.append(real(*a, **k)) or packed[-1])
    contexts = [f"Rate the response.\n\nQuestion: {q}\nResponse: {r}\nRating: " for q, r in zip(PROMPTS, A + B)]
    options = [f"{k}/10" for k in range(1, 11)]
    got = _next_token_logprobs(model, tok, contexts, options)
    assert packed and packed[0] is not None  # the packed forward ran
    for i, ctx in enumerate(contexts):
        for j, opt in enumerate(options):
            c, o = (tok(t, add_special_tokens=False)["input_ids"] for t in (ctx, opt))
            ids = torch.tensor([c + o])
            labels = torch.tensor([[IGNORE_INDEX] * len(c) + o])
            want = completion_logprobs(model, ids, torch.ones_like(ids), labels).logprobs.sum()
            assert got[i, j].item() == pytest.approx(want.item(), abs=1e-9)
