"""Where rows come from: local files (jsonl/json/parquet/csv), a Hugging Face dataset, or the embedded tasks.

Every source loads through ``datasets`` and has a ``name`` used in error messages. A plain string in a config is
a file path when it ends in a known extension or is a file on disk, and otherwise a Hub dataset name or a local
dataset folder (Hub layout or ``save_to_disk``).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path

import datasets


class DataError(ValueError):
    """Bad input data: the message names the source, the row (1-based; the line of a jsonl file) and the field."""


class Source(ABC):
    """A dataset of rows with a name for error messages."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def load(self) -> datasets.Dataset: ...


_EXTENSIONS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class Files(Source):
    """Rows from local files, all of one format.

    Args:
        paths: One path or a list of paths (``.jsonl``, ``.json``, ``.parquet`` or ``.csv``).
    """

    def __init__(self, paths: str | list[str]) -> None:
        self.paths = [paths] if isinstance(paths, str) else list(paths)
        kinds = {_EXTENSIONS.get(Path(p).suffix.lower()) for p in self.paths}
        if None in kinds or len(kinds) != 1:
            raise DataError(f"{self.paths}: expected files of one format among {sorted(_EXTENSIONS)}")
        self.kind = kinds.pop()
        for p in self.paths:
            if not Path(p).is_file():
                raise DataError(f"{p}: no such file")

    @property
    def name(self) -> str:
        return ", ".join(self.paths)

    def load(self) -> datasets.Dataset:
        if self.kind == "json":  # parsed here: exact line numbers, and no Arrow type coercion of mixed columns
            return datasets.Dataset.from_list(_read_json_rows(self.paths))
        try:
            ds = datasets.load_dataset(self.kind, data_files=self.paths, split="train")
            if self.kind == "csv":  # csv has no types: read every column as text
                ds = ds.cast(datasets.Features({c: datasets.Value("string") for c in ds.column_names}))
            return ds
        except Exception as err:
            if "corresponds to no data" in str(err):  # datasets' words for a header-only csv or an empty parquet
                raise DataError(f"{self.name}: no rows") from err
            raise DataError(f"{self.name}: could not be read: {err}") from err


def _read_json_rows(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        raw = Path(path).read_bytes()
        try:
            text = raw.decode("utf-8-sig")  # a byte-order mark is accepted, as every mainstream reader does
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise DataError(
                f"{path}: row {line}: not UTF-8 (byte 0x{raw[err.start]:02x}); save the file as UTF-8"
            ) from None
        if path.endswith(".json"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: not valid JSON ({err})") from err
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of objects")
            numbered = [(i, r) for i, r in enumerate(data, start=1)]
        else:
            numbered = []
            for i, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    numbered.append((i, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}: row {i}: not valid JSON ({err.msg})") from err
        types: dict[str, type] = {}
        for i, row in numbered:
            if not isinstance(row, dict):
                raise DataError(f"{path}: row {i}: expected a JSON object, got {type(row).__name__}")
            for key, value in row.items():
                if value is None:
                    continue
                seen = types.setdefault(key, type(value))
                if seen is not type(value):
                    raise DataError(
                        f"{path}: row {i}: field '{key}' is {type(value).__name__}, earlier rows have {seen.__name__}"
                    )
            rows.append(row)
    return rows


class Hub(Source):
    """A dataset from the Hugging Face Hub (or its local cache when offline), a local folder in a Hub dataset's layout
    (data files that ``load_dataset`` reads the same way), or a folder written by ``Dataset.save_to_disk``.

    Args:
        path: Dataset id, e.g. ``"TIGER-Lab/WebInstruct-CFT"``.
        subset: Configuration name, if the dataset has several.
        split: Split to load.
        revision: Git revision of the dataset repository.
    """

    def __init__(self, path: str, subset: str | None = None, split: str = "train", revision: str | None = None) -> None:
        self.path, self.subset, self.split, self.revision = path, subset, split, revision

    @property
    def name(self) -> str:
        return f"{self.path}[{self.subset or 'default'}:{self.split}]"

    def load(self) -> datasets.Dataset:
        local = Path(self.path)
        try:
            if (local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file():  # save_to_disk
                ds = datasets.load_from_disk(self.path)
                return ds[self.split] if isinstance(ds, datasets.DatasetDict) else ds
            return datasets.load_dataset(self.path, self.subset, split=self.split, revision=self.revision)
        except (OSError, ValueError, KeyError) as e:  # not on the Hub, not cached offline, no such split
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            offline = " (HF_HUB_OFFLINE is set: only cached datasets load)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise DataError(f"{self.name}: cannot load: {first}{offline}") from e


# What a config may give where rows are read: a file path (``Path`` in the union keeps jsonargparse from reading a
# command-line path's *content* as the value, which broke ``--data.init_args.train rows.csv``), a Hub id, a Source.
# ``Source`` comes first: jsonargparse dumps a value by the first type that serialises it, and ``str`` serialises
# anything (a Source was dumped as "Namespace(class_path=...)", so --print_config and a run's config.yaml did not
# load back).
SourceLike = Source | str | Path


def as_source(spec: SourceLike) -> Source:
    """A ``Source`` from a config value: a path string, a Hub id string, or a ``Source`` already."""
    if isinstance(spec, Source):
        return spec
    spec = str(spec)
    if Path(spec).suffix.lower() in _EXTENSIONS or Path(spec).is_file():
        return Files(spec)
    return Hub(spec)  # a Hub id, or a local dataset folder
