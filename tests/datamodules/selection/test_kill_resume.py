"""An IFD selection killed with SIGKILL while it scores the pool, then started again, scores each row once (the
chunks it finished are read back, only the missing ones are scored) and ends with the scores, cache entry and kept
rows of an uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ltune.cli import main
from ltune.datamodules.selection.ifd import IFD
from tests.conftest import MICRO, ROOT, cpu_env

N, CHUNK = 600, 50
ARGS = [
    "select",
    "--config",
    str(ROOT / "configs/selection/ifd.yaml"),
    *MICRO,
    f"--data.init_args.pool.init_args.train.init_args.n={N}",
    "--data.init_args.pool.init_args.eval_prompts.init_args.n=4",
    "--data.init_args.progress=false",
    f"--data.init_args.score_chunk={CHUNK}",
    "--output=kept.jsonl",
]


@pytest.mark.slow  # a CLI run in a subprocess (interpreter start-up dominates): ~30-60 s on 2 shared cores
def test_sigkill_mid_scoring_then_resume_scores_each_row_once_and_equals_a_straight_run(tmp_path, monkeypatch, caplog):
    straight, killed = tmp_path / "a", tmp_path / "b"
    straight.mkdir(), killed.mkdir()
    monkeypatch.chdir(straight)
    main(ARGS)
    (entry,) = (straight / "runs/selection_cache").glob("*.npz")

    cache = killed / "runs/selection_cache"
    proc = subprocess.Popen([sys.executable, "-m", "ltune.cli", *ARGS], cwd=killed, env=cpu_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not list(cache.glob("*/rows_*.npz")):  # the first chunk is written
        assert proc.poll() is None and time.time() < deadline, "the run ended before it wrote a chunk"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cache / entry.name).exists(), "killed too late: the scoring had already finished"
    chunks = sorted(cache.glob(f"{entry.stem}/rows_*.npz"))
    assert 1 <= len(chunks) < N // CHUNK
    for path in chunks:  # every chunk on disk is whole
        with np.load(path) as f:
            assert len(f["ifd"]) == CHUNK

    seen = []
    score = IFD.score
    monkeypatch.setattr(IFD, "score", lambda self, rows, names: seen.append(len(rows)) or score(self, rows, names))
    monkeypatch.chdir(killed)
    caplog.set_level(logging.INFO, logger="ltune.datamodules.selection.scoring")
    main(ARGS)
    reused = len(chunks) * CHUNK
    assert sum(seen) == N - reused and all(n == CHUNK for n in seen)  # no row scored twice, none lost
    assert re.search(rf"selection scoring: {N - reused} rows scored, {reused} from cache", caplog.text)

    assert sorted(p.name for p in cache.iterdir()) == [entry.with_suffix(".json").name, entry.name]  # chunks removed
    with np.load(entry) as want, np.load(cache / entry.name) as got:
        assert sorted(got.files) == sorted(want.files)
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert json.loads((cache / entry.with_suffix(".json").name).read_text()) == json.loads(
        entry.with_suffix(".json").read_text()
    )
    assert (killed / "kept.jsonl").read_text() == (straight / "kept.jsonl").read_text()
