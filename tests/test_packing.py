"""Packing (ltune/packing.py): the layout and best-fit-decreasing bins by hand, hidden states, log-probs and
gradients equal to each row alone in float64 (sdpa and eager attention), pair objectives equal with and without
it, and twins continued off their rows' KV cache equal to their own forward."""

import pytest
import torch

from ltune.forward import completion_logprobs, hidden_states
from ltune.objectives import DPO, ORPO, SimPO
from ltune.packing import (
    best_fit_groups,
    common_prefix_length,
    consecutive_groups,
    continued_hidden,
    grouped_logprobs,
    pack_groups,
    pair_groups,
    row_groups,
    shared_prefix_hidden,
    shared_prefix_lengths,
)
from tests.conftest import micro_backbone
from tests.objectives.test_dpo import _batch


def _rows(rows: list[list[int]], t: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def test_layout_by_hand():
    """Pair 0 shares 4 tokens (chosen rest 2, rejected rest 3: the module docstring's picture); pair 1 shares 1."""
    ids, mask = _rows([[5, 6, 7, 8, 9, 10], [11, 12], [5, 6, 7, 8, 20, 21, 22], [11, 30, 31]], t=7)
    p = pack_groups(ids, mask, pair_groups(4))
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 20, 21, 22], [11, 12, 30, 31, 0, 0, 0, 0, 0]]
    assert p.segments.tolist() == [[0, 0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 2, -1, -1, -1, -1, -1]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 4, 5, 6], [0, 1, 1, 2, 0, 0, 0, 0, 0]]
    flat = p.input_ids.flatten()
    assert all(flat[p.index[i, j]] == ids[i, j] for i in range(4) for j in range(7) if mask[i, j])
    allowed = p.attention_mask()[0, 0]
    assert allowed[6].tolist() == [1, 1, 1, 1, 0, 0, 1, 0, 0]  # rejected's first rest token: prefix + itself
    assert allowed[5].tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0]  # chosen's last token: prefix + chosen
    assert p.attention_mask()[1, 0, 6].tolist() == [0] * 6 + [1, 0, 0]  # padding sees itself only


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_hidden_states_and_gradients_equal_each_row_alone(attn):
    """A group of 3 rows (one a prefix of the other two); pairs with a long shared prefix, nothing shared, and
    identical rows; 5 rows packed 2 at a time (the last group one row short); two sampled groups of 3 laid out as
    GRPO's (left-padded prompt, right-padded completion). float64, so any difference beyond rounding is a wrong
    mask, position or gather (Llama's RMSNorm and eager softmax compute in float32, so gradients summed over shared
    positions differ from per-row sums at float32 rounding: 1e-6 of the largest)."""
    torch.manual_seed(0)
    model = micro_backbone(attn_implementation=attn).load_model().double()
    g = torch.Generator().manual_seed(1)
    b = torch.randint(3, 300, (30,), generator=g).tolist()
    cases = [
        ([b[:20], b[:14] + [1, 2, 3, 4, 5, 6], b[:12]], [[0, 1, 2]]),
        ([b[:12] + [7, 8, 9], [4] + b[5:9], b[3:10], b[:20], b[10:15] + [9, 9], b[3:10]], pair_groups(6).tolist()),
        ([b[:9] + [1], b[:9] + [2, 3], b[:4], b[:5] + [6], b[:8]], consecutive_groups(5, 2).tolist()),  # a -1 slot
    ]
    prompts = torch.tensor([[0, 0, 0, *b[20:23]]] * 3 + [b[:6]] * 3)  # [B*G, P] left-padded, B 2, G 3
    completions, cmask = _rows([[1, 2, 3], [1, 2, 5, 6], [7], [8, 9], [8, 9, 10, 11], [8]], t=5)
    sampled = (torch.cat([prompts, completions], 1), torch.cat([(prompts > 0).long(), cmask], 1))
    for rows, groups in [*cases, (None, consecutive_groups(6, 3).tolist())]:
        ids, mask = _rows(rows, t=24) if rows else sampled
        groups, real = torch.tensor(groups), mask.bool()
        w = torch.randn(*ids.shape, 32, dtype=torch.float64, generator=g) * real[..., None]
        model.zero_grad()  # the reference: every row alone, without padding
        plain = [hidden_states(model, ids[i, real[i]][None], mask[i, real[i]][None])[0] for i in range(len(ids))]
        sum((h * w[i, real[i]]).sum() for i, h in enumerate(plain)).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        packed = shared_prefix_hidden(model, ids, mask, groups, min_saving=0.0)
        (packed * w).sum().backward()
        torch.testing.assert_close(packed[real], torch.cat(plain).detach(), rtol=0, atol=1e-6)  # float32 softmax
        for a, p in zip(grads, model.parameters(), strict=True):
            torch.testing.assert_close(p.grad, a, rtol=0, atol=1e-6 * a.abs().max().item())


def test_a_packed_forward_keeps_one_mask_for_every_layer():
    """SDPA saves the block mask for the backward once, not once per layer: it converts a boolean mask in every
    layer and keeps each copy (at 4,096 tokens, 64 MB a layer)."""
    model = micro_backbone(attn_implementation="sdpa").load_model()
    ids, mask = _rows([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 20, 21, 22], [11, 12], [11, 30, 31]], t=7)
    saved = []

    def keep(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        shared_prefix_hidden(model, ids, mask, pair_groups(4), min_saving=0.0)
    masks = {t.data_ptr() for t in saved if t.dim() == 4 and t.shape[1] == 1 and t.shape[2] == t.shape[3]}  # [G,1,P,P]
    assert len(masks) == 1, f"{len(masks)} block masks saved over {model.config.num_hidden_layers} layers"


def test_best_fit_decreasing_by_hand():
    """Sizes 8, 7, 5, 3, 2, 1 into bins of 10, longest first: 8 and 7 open bins, 5 fits neither (a third bin), 3 goes
    to the tightest fit (7's bin, room 3, over 5's, room 5), 2 to 8's (room 2), 1 to the only room left (5's)."""
    assert best_fit_groups([5, 3, 8, 2, 7, 1], 10).tolist() == [[2, 3], [4, 1], [0, 5]]
    assert best_fit_groups([12, 3], 10).tolist() == [[0], [1]]  # a row over capacity has a bin of its own
    assert best_fit_groups([4, 4, 4], 100).tolist() == [[0, 1, 2]]


def test_row_groups_pack_the_rests_after_the_common_prefix():
    """Rows sharing 3 leading tokens: bins of ``pack_length`` 9 hold the prefix once, so 6 tokens of rests each.
    Rests 3, 1, 2, 4: 4 opens a bin (room 2), 3 opens another (room 3), 2 fills the first, 1 joins the second."""
    ids, mask = _rows([[1, 2, 3, 4, 5, 6], [1, 2, 3, 7], [1, 2, 3, 8, 9], [1, 2, 3, 4, 4, 4, 4]], t=7)
    assert common_prefix_length(ids, mask) == 3
    model = micro_backbone().load_model()
    assert row_groups(model, ids, mask, pack_length=9).tolist() == [[3, 2], [0, 1]]
    assert common_prefix_length(*_rows([[5, 6], [7, 6]], t=2)) == 0


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_unrelated_rows_packed_best_fit_give_each_rows_logprobs_alone(attn):
    """Eight rows of 3 to 40 random tokens, nothing shared, packed best-fit-decreasing into sequences no longer than
    the longest row: every row's token log-probs (and argmax hits) equal those of the row run alone, unpadded."""
    torch.manual_seed(0)
    model = micro_backbone(attn_implementation=attn).load_model().double()
    g = torch.Generator().manual_seed(2)
    rows = [torch.randint(3, 300, (int(n),), generator=g).tolist() for n in torch.randint(3, 41, (8,), generator=g)]
    ids, mask = _rows(rows, t=40)
    labels = ids.masked_fill(mask == 0, -100)
    groups = row_groups(model, ids, mask)
    assert len(groups) < len(rows) and common_prefix_length(ids, mask) == 0
    packed = grouped_logprobs(model, ids, mask, labels, groups, with_argmax=True)
    for i, r in enumerate(rows):
        one = torch.tensor([r])
        alone = completion_logprobs(model, one, torch.ones_like(one), one, with_argmax=True)
        n = len(r) - 1
        torch.testing.assert_close(packed.logprobs[i, :n], alone.logprobs[0], rtol=0, atol=1e-6)
        assert packed.argmax_hit[i, :n].tolist() == alone.argmax_hit[0].tolist()
        assert not packed.logprobs[i, n:].any()  # padding carries nothing


def test_consecutive_groups_fill_the_last_group():
    assert consecutive_groups(5, 2).tolist() == [[0, 1], [2, 3], [4, -1]]
    assert consecutive_groups(6, 3).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_packing_that_saves_too_little_is_skipped(monkeypatch):
    """With nothing shared, packing saves no token: the plain forward runs (one call, on the [N, T] batch)."""
    model = micro_backbone().load_model()
    ids, mask = _rows([[5, 6, 7], [9, 10, 11]], t=3)
    calls = []
    import ltune.packing as sp

    monkeypatch.setattr(sp, "hidden_states", lambda m, i, a, p=None: calls.append(i.shape) or hidden_states(m, i, a))
    shared_prefix_hidden(model, ids, mask, pair_groups(2))
    assert calls == [(2, 3)]


@pytest.mark.parametrize("cls", [ORPO, DPO, SimPO])
def test_pair_objectives_equal_with_and_without_sharing(cls, monkeypatch):
    """Same weights, same batch (which packs: the forward gets the 4D block mask): loss, metrics and every gradient
    agree (float64 up to the float32 rounding of the norms, as above)."""
    import ltune.packing as sp

    masks = []
    monkeypatch.setattr(sp, "hidden_states", lambda m, i, a, p=None: masks.append(a.dim()) or hidden_states(m, i, a, p))
    losses, grads, metrics = [], [], []
    for share in (True, False):
        torch.manual_seed(0)
        model = cls(backbone=micro_backbone(), share_prompt=share)
        model.configure_model()
        model.double()
        batch = _batch(model, n=6)
        loss, m = model.forward_loss(batch)
        loss.backward()
        losses.append(loss)
        metrics.append(m)
        grads.append([p.grad for p in model.model.parameters() if p.grad is not None])
    assert masks == ([4, 4] if cls is DPO else [4])  # the policy's (and DPO's reference) forward packed
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-10)
    for k in metrics[0]:
        torch.testing.assert_close(metrics[0][k], metrics[1][k], rtol=1e-9, atol=1e-9)
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * a.abs().max().item())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_twins_continued_off_the_rows_cache_equal_their_own_forward(attn):
    """Twins sharing 4, 1 and all 3 of their rows' leading tokens (the third a row's strict prefix extended, the
    widths differ): hidden states at every real token equal each row's and twin's own unpadded forward in float64,
    the rows' with their gradients, the twins' without; a cache-less forward (activation checkpointing) leaves the
    twins to the caller."""
    torch.manual_seed(0)
    model = micro_backbone(attn_implementation=attn).load_model().double()
    b = torch.randint(3, 300, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    ids, mask = _rows([b[:9], b[10:16], b[20:23]], t=9)
    twin_ids, twin_mask = _rows([b[:4] + b[30:36], b[10:11] + [7], b[20:23] + [5, 6, 8, 9]], t=10)
    assert shared_prefix_lengths(ids, mask, twin_ids, twin_mask).tolist() == [4, 1, 3]
    hidden, twins = continued_hidden(model, ids, mask, twin_ids, twin_mask)
    assert hidden.requires_grad and not twins.requires_grad
    for rows, m, out in ((ids, mask, hidden), (twin_ids, twin_mask, twins)):
        real = m.bool()
        alone = [hidden_states(model, rows[i, real[i]][None], m[i, real[i]][None])[0] for i in range(len(rows))]
        torch.testing.assert_close(out[real], torch.cat(alone).detach(), rtol=0, atol=1e-6)  # float32 softmax
    w = torch.randn(hidden.shape, dtype=torch.float64) * mask[..., None]
    (hidden * w).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (hidden_states(model, ids, mask) * w).sum().backward()
    for a, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a, rtol=0, atol=1e-9 * a.abs().max().item())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # as Backbone does
    model.train()
    assert continued_hidden(model, ids, mask, twin_ids, twin_mask)[1] is None
