"""The output folder: where things go, atomic writes, and what a restart needs to know.

out/<dataset>/ (a local folder, or a prefix on object storage: s3://bucket/prefix, see `pipeline.io.storage`)
  .speechchat-output.json                            the marker: this output is the pipeline's (`ownership`)
  data/<language>/<split>/shard-<run>-<hash>.tar   samples (finished only once its manifest part exists)
  manifest/shard-<run>-<hash>.parquet               one row per sample; written after its tar: the commit record
  rejects/part-<run>-<hash>.parquet                  one row per rejected conversation
  text/part-<run>-<hash>.parquet                     the text cache
  state/runs.jsonl                                   one line per run (id, time, config digest)
  config.yaml, stats.json, README.md (card), report.html
A tar without its manifest part is unfinished and is deleted on restart, as are the pipeline's `.tmp` files,
a manifest part without its tar (locally both are renamed into place before their folders are fsynced, so a
power cut can keep either name alone) and, on S3, multipart uploads never completed. Only names the pipeline
writes are listed, read or removed (`pipeline.io.ownership`): other files in the folder are left alone.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ids import ids_to_u64
from pipeline.io.ownership import clean_unfinished, own_files
from pipeline.io.storage import Store

TMP_SUFFIX = ".tmp"


class Layout:
    """An output: its store and the pipeline's parts in it. Listings return locations: Paths for a local
    folder (as they always were), URLs for object storage; read them back through `read_table` / `open`."""

    def __init__(self, root: Path | str | Store, env_names: dict[str, str] | None = None):
        self.store = root if isinstance(root, Store) else Store(root, env_names)

    @property
    def root(self) -> Path | str:
        return self.store.location()

    @property
    def local(self) -> bool:
        return self.store.local

    @property
    def data(self) -> Path | str:
        return self.store.location("data")

    @property
    def manifest(self) -> Path | str:
        return self.store.location("manifest")

    @property
    def rejects(self) -> Path | str:
        return self.store.location("rejects")

    @property
    def state(self) -> Path | str:
        return self.store.location("state")

    def shard_dir(self, language: str, split: str) -> Path | str:
        return self.store.location(f"data/{language}/{split}")

    def make_dirs(self) -> None:
        self.store.mkdirs("data", "manifest", "rejects", "state")

    def _own(self, kind: str) -> list[Path | str]:
        return [self.store.location(rel) for rel in own_files(self.store, kind)]

    def manifest_parts(self) -> list[Path | str]:
        return self._own("manifest")

    def reject_parts(self) -> list[Path | str]:
        return self._own("rejects")

    def text_parts(self) -> list[Path | str]:
        return self._own("text")

    def shards(self) -> list[Path | str]:
        return self._own("shard")

    def shards_of(self, language: str, split: str) -> list[Path | str]:
        return [s for s in self.shards() if self.rel(s).startswith(f"data/{language}/{split}/")]

    def rel(self, location: Path | str) -> str:
        return self.store.rel(location)

    def read_table(self, location: Path | str, columns: list[str] | None = None) -> pa.Table:
        return self.store.read_table(location, columns)

    def open(self, location: Path | str) -> Any:
        return self.store.open(location)

    def size(self, location: Path | str) -> int:
        return self.store.size(location)

    def sha256(self, location: Path | str) -> str:
        h = hashlib.sha256()
        with self.store.open(location) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.store.write_bytes(rel, data)

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        self.store.write_atomic(rel, lambda fh: pq.write_table(table, fh))

    def clean_unfinished(self) -> list[Path | str]:
        """Remove the pipeline's unfinished files and uploads (`ownership.clean_unfinished`); return where they
        were (Paths for a local folder)."""
        return [self.store.location(rel) for rel in clean_unfinished(self.store)]

    def done_ids(self) -> np.ndarray:
        """64-bit hashes of every conversation already kept or rejected, sorted (8 bytes each)."""
        parts = self.manifest_parts() + self.reject_parts()
        return ids_to_u64(c for p in parts for c in self.read_table(p, ["conversation_id"]).column(0).to_pylist())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_tmp(path: Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """First half of an atomic write: write `<name>.tmp` and fsync it; `commit` publishes it.

    Split in two so that a caller can fsync two files at once (the disk's journal then commits them
    together) and still publish them in a fixed order. A `.tmp` left by a crash is removed on restart.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(tmp: Path, path: Path) -> None:
    """Rename a fsynced temp file into place; the name is durable once `sync_folders` has run."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sync_folders(*paths: Path) -> None:
    """fsync the folders holding `paths`, so their names survive a crash. Several renames then share one
    journal commit: after the first folder's fsync the others usually have nothing left to write."""
    for folder in dict.fromkeys(p.parent for p in paths):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def commit(tmp: Path, path: Path) -> None:
    """Second half: rename the fsynced temp file into place and fsync the folder, so the name survives a crash."""
    publish(tmp, path)
    sync_folders(path)


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write to `<name>.tmp`, fsync, then rename: readers see the whole file or nothing."""
    commit(write_tmp(path, write), path)


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda fh: pq.write_table(table, fh))
