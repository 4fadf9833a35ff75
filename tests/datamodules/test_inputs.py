"""Every input a user may hand over loads the same from Python, from YAML and from a command-line flag: jsonl, json,
parquet, csv, a ``save_to_disk`` folder, a local folder in a Hub dataset's layout, a Hub id served from the offline
cache, and a Python ``Source``; plus empty files, files with no usable row, quoted newlines and nulls."""

import json
import shutil

import datasets
import pandas as pd
import pytest

from ltune.cli import LTuneCLI, _cli
from ltune.datamodules import DataError, InstructionData, Source
from tests.conftest import MICRO, write_jsonl

ROWS = [{"prompt": f"What is {i}+1?", "response": f"{i}+1={i + 1}.\nThe answer is {i + 1}."} for i in range(6)]


class Rows(Source):
    """A user's own source, named by class_path from YAML or a flag."""

    def __init__(self, n: int = 6) -> None:
        self.n = n

    @property
    def name(self) -> str:
        return "rows"

    def load(self) -> list[dict]:
        return ROWS[: self.n]


def _inputs(tmp: "pathlib.Path", monkeypatch) -> dict[str, str]:  # noqa: F821
    write_jsonl(tmp / "d.jsonl", ROWS)
    (tmp / "d.json").write_text(json.dumps(ROWS))
    pd.DataFrame(ROWS).to_parquet(tmp / "d.parquet")
    pd.DataFrame(ROWS).to_csv(tmp / "d.csv", index=False)  # quoted fields with newlines
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp / "saved"))
    (tmp / "repo/data").mkdir(parents=True)
    pd.DataFrame(ROWS).to_parquet(tmp / "repo/data/train-00000-of-00001.parquet")
    # a Hub id loaded once before, now read offline from the datasets cache (what `load_dataset` keeps)
    builder = datasets.load_dataset_builder("parquet", data_files={"train": str(tmp / "d.parquet")}, cache_dir=str(tmp))
    builder.download_and_prepare()
    cached = tmp / "hub_cache/ltune-test___toy/default/0.0.0/0"
    shutil.copytree(builder.cache_dir, cached)
    (cached / "parquet-train.arrow").rename(cached / "toy-train.arrow")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp / "hub_cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    names = ["d.jsonl", "d.json", "d.parquet", "d.csv", "saved", "repo"]
    return {**{n: str(tmp / n) for n in names}, "hub id": "ltune-test/toy"}


def _rows(dm, tokenizer) -> list[str]:
    dm.tokenizer = tokenizer
    dm.setup("fit")
    return [tokenizer.decode(ex["input_ids"]) for ex in dm.data["train"]]


def _from_cli(tokenizer, *args: str) -> list[str]:
    cli = _cli(LTuneCLI, [*args, *MICRO, "--trainer.logger=false"], run=False)
    return _rows(cli.datamodule, tokenizer)


def test_every_format_loads_the_same_from_python_yaml_and_a_flag(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    expected = _rows(InstructionData(train=Rows()), tokenizer)
    assert len(expected) == 6 and "\nThe answer is 1." in expected[0]  # the newline inside a field survives
    for kind, spec in _inputs(tmp_path, monkeypatch).items():
        assert _rows(InstructionData(train=spec), tokenizer) == expected, kind
        cfg = tmp_path / "c.yaml"
        cfg.write_text(json.dumps({"data": {"class_path": "ltune.datamodules.InstructionData",
                                            "init_args": {"train": spec}}}))  # fmt: skip
        assert _from_cli(tokenizer, "--config", str(cfg)) == expected, f"{kind} from YAML"
        flag = _from_cli(tokenizer, "--data=ltune.datamodules.InstructionData", f"--data.init_args.train={spec}")
        assert flag == expected, f"{kind} from a flag"
    source = '{"class_path": "tests.datamodules.test_inputs.Rows", "init_args": {"n": 6}}'
    assert _from_cli(tokenizer, "--data=ltune.datamodules.InstructionData", f"--data.init_args.train={source}") == (
        expected
    )


def test_empty_and_unusable_files_and_nulls_are_named(tmp_path, tokenizer):
    for name, text in (("empty.jsonl", ""), ("empty.csv", "prompt,response\n"), ("blank.json", "[]")):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=rf"{name}.*no rows"):
            _rows(InstructionData(train=str(tmp_path / name)), tokenizer)
    nulls = write_jsonl(tmp_path / "nulls.jsonl", [ROWS[0], {"prompt": None, "response": "x"}])
    with pytest.raises(DataError, match=r"nulls.jsonl: row 2: field 'prompt' \(column 'prompt'\) is missing"):
        _rows(InstructionData(train=nulls), tokenizer)
    long = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "p", "response": "r" * 400}] * 3)
    with pytest.raises(DataError, match=r"train: every row was skipped by the length policy \(max_length=64\)"):
        _rows(InstructionData(train=long, max_length=64), tokenizer)


def test_a_hub_id_that_is_not_cached_offline_names_itself(monkeypatch, tokenizer):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"nobody/nothing\[default:train\]: cannot load: .*HF_HUB_OFFLINE is set"):
        _rows(InstructionData(train="nobody/nothing"), tokenizer)
