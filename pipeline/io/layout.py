"""The output folder: where things go, atomic writes, and what a restart needs to know.

out/<dataset>/
  data/<language>/<split>/shard-<run>-<hash>.tar   samples (finished only once renamed into place)
  manifest/shard-<run>-<hash>.parquet               one row per sample; written after its tar
  rejects/part-<run>-<hash>.parquet                  one row per rejected conversation
  state/runs.jsonl                                   one line per run (id, time, config digest)
  config.yaml, stats.json
A tar without its manifest part is unfinished and is deleted on restart, as are `.tmp` files and a manifest
part without its tar (both are renamed into place before their folders are fsynced, so a power cut can keep
either name alone).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ids import ids_to_u64

TMP_SUFFIX = ".tmp"


class Layout:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def shard_dir(self, language: str, split: str) -> Path:
        return self.data / language / split

    def make_dirs(self) -> None:
        for d in (self.data, self.manifest, self.rejects, self.state):
            d.mkdir(parents=True, exist_ok=True)

    def manifest_parts(self) -> list[Path]:
        return sorted(self.manifest.glob("*.parquet")) if self.manifest.is_dir() else []

    def reject_parts(self) -> list[Path]:
        return sorted(self.rejects.glob("*.parquet")) if self.rejects.is_dir() else []

    def shards(self) -> list[Path]:
        return sorted(self.data.glob("*/*/*.tar")) if self.data.is_dir() else []

    def clean_unfinished(self) -> list[Path]:
        """Remove temp files, tars whose manifest part was never written (a crash between the two) and
        manifest parts whose tar did not reach the disk (a power cut before the folders' fsync)."""
        removed = [p for p in self.root.rglob(f"*{TMP_SUFFIX}") if p.is_file()] if self.root.is_dir() else []
        parts, tars = self.manifest_parts(), self.shards()
        finished, written = {p.stem for p in parts}, {t.stem for t in tars}
        removed += [t for t in tars if t.stem not in finished] + [p for p in parts if p.stem not in written]
        for p in removed:
            p.unlink(missing_ok=True)
        return removed

    def done_ids(self) -> np.ndarray:
        """64-bit hashes of every conversation already kept or rejected, sorted (8 bytes each)."""
        parts = self.manifest_parts() + self.reject_parts()
        return ids_to_u64(c for p in parts for c in pq.read_table(p, columns=["conversation_id"]).column(0).to_pylist())


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
