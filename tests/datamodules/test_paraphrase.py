"""ParaphraseData: two sequences per row with the same output, hard-negative pairs adjacent, a pair-shuffling
sampler that keeps pairs whole across epochs, ranks and mid-epoch resume."""

import pytest

from ltune.datamodules import EmbeddedTasks, ParaphraseData
from ltune.datamodules.paraphrase import PairSampler


def _setup(tokenizer, n=40, **kw):
    dm = ParaphraseData(train=EmbeddedTasks(format="paraphrase", n=n), batch_size=4, **kw)
    dm.tokenizer = tokenizer
    dm.setup("fit")
    return dm


def test_rows_give_two_sequences_with_the_same_output(tokenizer):
    dm = _setup(tokenizer)
    for ex in dm.data["train"]:
        orig, para = ex["sequences"]
        assert [t for t in orig["labels"] if t != -100] == [t for t in para["labels"] if t != -100]
        assert orig["input_ids"] != para["input_ids"]
    batch = dm.collate(dm.data["train"][:4])
    assert batch["input_ids"].shape[0] == 8


def test_hard_negatives_are_adjacent_pairs_of_one_category(tokenizer):
    dm = _setup(tokenizer, n=41)
    data = dm.data["train"]
    assert len(data) == 40 and dm.stats["train"]["unpaired"] == 1
    same = sum(data[2 * k]["category"] == data[2 * k + 1]["category"] for k in range(20))
    assert same >= 20 - 6  # at most one leftover per category pairs across categories
    assert all(data[2 * k]["sequences"][0] != data[2 * k + 1]["sequences"][0] for k in range(20))


def test_sampler_shuffles_pairs_shards_and_resumes():
    data = list(range(20))
    s = PairSampler(data, world=1, rank=0, seed=0, batch_size=4)
    order = list(s)
    assert sorted(order) == data and all(order[i] // 2 == order[i + 1] // 2 for i in range(0, 20, 2))
    s.set_epoch(1)
    assert list(s) != order  # a new pair order each epoch
    shards = [list(PairSampler(data, world=3, rank=r, seed=0, batch_size=4)) for r in range(3)]
    assert len({len(x) for x in shards}) == 1 and set().union(*shards) == set(data)  # equal, padded with pairs
    for shard in shards:
        assert all(shard[i] // 2 == shard[i + 1] // 2 for i in range(0, len(shard), 2))
    s = PairSampler(data, world=1, rank=0, seed=0, batch_size=4)
    s.resume = (0, 2)
    assert list(s) == order[8:]


def test_odd_batch_size_is_refused():
    with pytest.raises(ValueError, match="even"):
        ParaphraseData(batch_size=5)
