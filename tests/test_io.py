"""Atomic writes: the target holds the old or the new content, never a part; no temporary file is left behind."""

import json

import pytest

from ltune.io import atomic_write, atomic_write_jsonl, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "old")
    assert path.read_text() == "old"

    def half(f):
        f.write(b"new but incomp")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_jsonl_round_trips_non_ascii(tmp_path):
    rows = [{"prompt": "¿2+2?", "response": "4"}, {"prompt": "ñ", "response": "é"}]
    path = atomic_write_jsonl(tmp_path / "r.jsonl", rows)
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == rows
    assert "¿" in path.read_text(encoding="utf-8")
