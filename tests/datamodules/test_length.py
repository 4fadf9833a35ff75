"""The length policy's pure functions (datamodules/length.py), by hand."""

import pytest

from ltune.datamodules.length import Overlong, cut_pair, cut_sequence

I = -100  # noqa: E741


def test_cut_pair_by_hand():
    p, c, r = [1, 2, 3, 4], [5, 6, 7], [8]
    assert cut_pair(p, [c, r], 8, "truncate_prompt") == (p, [c, r], False)  # 4 + 3 fits
    assert cut_pair(p, [c, r], 5, "truncate_prompt") == ([3, 4], [c, r], True)  # the longer response decides
    assert cut_pair(p, [c, r], 5, "keep_start") == (p, [[5], [8]], True)  # both responses cut to 5 - 4 = 1 token
    with pytest.raises(Overlong):  # a pair cut back to the same response teaches nothing: skipped
        cut_pair(p, [[5, 6], [5, 7]], 5, "keep_start")
    for policy, max_length in (("skip", 5), ("truncate_prompt", 3), ("keep_start", 4)):
        with pytest.raises(Overlong):  # skip; the response alone fills max_length; nothing after the prompt
            cut_pair(p, [c, r], max_length, policy)


def test_cut_sequence_keeps_the_start_or_the_kept_head_and_the_end():
    ids, labels = [1, 2, 3, 4, 5, 6], [I, I, 3, 4, 5, 6]
    assert cut_sequence(ids, labels, 4, "keep_start") == ([1, 2, 3, 4], [I, I, 3, 4], True)
    assert cut_sequence(ids, labels, 4, "truncate_prompt", lambda: 1) == ([1, 4, 5, 6], [I, 4, 5, 6], True)
    with pytest.raises(Overlong):  # only untrained tokens left
        cut_sequence(ids, labels, 2, "keep_start")
