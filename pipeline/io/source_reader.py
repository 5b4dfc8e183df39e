"""Reading existing text datasets (instructions or dialogues) to rewrite into spoken conversations.

Accepted inputs: a JSONL file, a JSON file holding a list, a Parquet file, a local Hugging Face dataset
folder (saved with `save_to_disk`), or a folder of such files (read in name order). Records are streamed
one by one and numbered; the number becomes part of the conversation ID, so reruns plan the same IDs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


class SourceError(ValueError):
    """The source path cannot be read at all (a single bad record is a rejection, not this)."""


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "state.json").is_file()
                              or (path / "dataset_dict.json").is_file())


def source_files(path: Path) -> list[Path]:
    if not path.exists():
        raise SourceError(f"source.path {path} does not exist")
    if path.is_file():
        if path.suffix not in FILE_SUFFIXES:
            raise SourceError(f"source.path {path}: expected one of {FILE_SUFFIXES} or a dataset folder")
        return [path]
    if is_hf_dataset_dir(path):
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FILE_SUFFIXES)
    if not files:
        raise SourceError(f"source.path {path}: no {', '.join(FILE_SUFFIXES)} files and not a saved HF dataset")
    return files


def iter_file(path: Path) -> Iterator[Any]:
    """Records of one file or HF dataset folder. A line that is not JSON yields a `SourceError` instance
    (not raised) so the caller can record it as a rejection and go on."""
    if path.is_dir():
        try:
            import datasets
        except ImportError:
            raise SourceError("reading a saved Hugging Face dataset needs `datasets` (pip install -e .[hub])") from None
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        yield from ds
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    elif path.suffix == ".jsonl":
        with open(path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    yield SourceError(f"{path.name} line {lineno}: not JSON ({exc.msg})")
    else:  # .json: a list of records, or an object with one list inside
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else [data]
        yield from data


def iter_records(path: Path, limit: int | None = None) -> Iterator[tuple[int, Any]]:
    index = 0
    for file in source_files(path):
        for record in iter_file(file):
            if limit is not None and index >= limit:
                return
            yield index, record
            index += 1


def count_records(path: Path, limit: int | None = None) -> int:
    return sum(1 for _ in iter_records(path, limit))
