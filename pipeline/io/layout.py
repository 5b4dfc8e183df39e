"""The output folder: where things go, atomic writes, and what a restart needs to know.

out/<dataset>/ (a local folder, or a prefix on object storage: s3://bucket/prefix, see `pipeline.io.storage`)
  .speechchat-output.json                            the marker: this output is the pipeline's (`ownership`)
  data/<language>/<split>/shard-<run>-<hash>.tar   samples (finished only once renamed into place)
  manifest/shard-<run>-<hash>.parquet               one row per sample; written after its tar
  data/<language>/duplex/<split>/shard-*.tar        duplex.enabled: one stereo timeline per conversation
  manifest/duplex/shard-*.parquet                   its manifest; both written before the main shard's part
  rejects/part-<run>-<hash>.parquet                  one row per rejected conversation
  state/runs.jsonl                                   one line per run (id, time, config digest)
  config.yaml, stats.json
On object storage (no rename) the manifest part is the commit record: a tar without it is invisible to readers,
and multipart uploads a killed writer never completed are aborted on restart.
A tar without its manifest part is unfinished and is deleted on restart, as are `.tmp` files and a manifest
part without its tar (both are renamed into place before their folders are fsynced, so a power cut can keep
either name alone). A duplex tar and part are finished only when the main manifest part of the same name is
there too (they are written first), so a crash between them leaves nothing a rerun would duplicate.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ConfigError
from pipeline.faults import armed, checkpoint
from pipeline.ids import ids_to_u64
from pipeline.io.storage import Store

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
DUPLEX = "duplex"  # the duplex subset's folder under data/<language>/ and manifest/ (never a split name)

# The names the pipeline writes inside an output (relative, POSIX). Listing, reading, cleanup and publishing
# touch only these (and their `.tmp`): a user's `data/en/train/holiday-photos.tar` or `manifest/notes.parquet` in
# the same folder is never read as data, removed or uploaded.
_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"  # config.SAFE_NAME: languages, splits
_PART = r"r[0-9A-Za-z]{0,40}-[0-9a-f]{12}"  # <run id: r + UTC time>-<hash of the conversation IDs>
MARKER = ".speechchat-output.json"  # the owned output's marker (`pipeline.io.ownership`)
OWN_PATTERNS: dict[str, re.Pattern[str]] = {
    "marker": re.compile(re.escape(MARKER)),
    "shard": re.compile(rf"data/{_NAME}/{_NAME}/shard-{_PART}\.tar"),
    "manifest": re.compile(rf"manifest/shard-{_PART}\.parquet"),
    "duplex_shard": re.compile(rf"data/{_NAME}/{DUPLEX}/{_NAME}/shard-{_PART}\.tar"),
    "duplex_manifest": re.compile(rf"manifest/{DUPLEX}/shard-{_PART}\.parquet"),
    "rejects": re.compile(rf"rejects/part-{_PART}\.parquet"),
    "text": re.compile(rf"text/part-{_PART}\.parquet"),
    "near_dup": re.compile(rf"state/near_dup/(shard|text)-{_PART}\.parquet"),
    "root": re.compile(r"README\.md|report\.html|stats\.json|config\.yaml|config\.[a-z]{2}(-[a-z]{2})*\.yaml"),
    "state": re.compile(r"state/(runs\.jsonl|llm_server\.log|xtts_latents/[^/]+\.pt)"),
    "plan": re.compile(r"plan/specs\.parquet"),
}
# the folder each kind of part lives under (listing a folder is cheaper than listing the whole output)
KIND_DIRS = {"shard": "data", "manifest": "manifest", "duplex_shard": "data", "duplex_manifest": f"manifest/{DUPLEX}",
             "rejects": "rejects", "text": "text", "near_dup": "state/near_dup"}


def is_own_name(rel: str, kind: str | None = None) -> bool:
    """A name the pipeline writes (of that kind)."""
    return any(p.fullmatch(rel) for p in ([OWN_PATTERNS[kind]] if kind else OWN_PATTERNS.values()))


def is_own_temp(rel: str) -> bool:
    """`<a name the pipeline writes>.tmp`: a write of the pipeline's that never reached its rename."""
    return rel.endswith(TMP_SUFFIX) and is_own_name(rel[: -len(TMP_SUFFIX)])


class Layout:
    """An output: its store and the pipeline's own parts in it. Listings return locations: Paths for a local
    folder (as they always were), URLs for object storage; read them back through the layout's store."""

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

    def duplex_dir(self, language: str, split: str) -> Path | str:
        return self.store.location(f"data/{language}/{DUPLEX}/{split}")

    @property
    def duplex_manifest(self) -> Path | str:
        return self.store.location(f"manifest/{DUPLEX}")

    def rel(self, location: Path | str) -> str:
        return self.store.rel(location)

    def own(self, kind: str, under: str | None = None) -> list[Path | str]:
        """The pipeline's own files of that kind (under one folder of the output), sorted."""
        return [self.store.location(rel) for rel in self.store.list_files(under or KIND_DIRS[kind])
                if is_own_name(rel, kind)]

    def duplex_manifest_parts(self) -> list[Path | str]:
        return self.own("duplex_manifest", f"manifest/{DUPLEX}")

    def duplex_shards(self) -> list[Path | str]:
        return self.own("duplex_shard")

    def make_dirs(self) -> None:
        self.store.mkdirs("data", "manifest", "rejects", "state")

    def manifest_parts(self) -> list[Path | str]:
        return self.own("manifest")

    def reject_parts(self) -> list[Path | str]:
        return self.own("rejects")

    def text_parts(self) -> list[Path | str]:
        return self.own("text")

    def shards(self) -> list[Path | str]:
        return self.own("shard")

    def shards_of(self, language: str, split: str) -> list[Path | str]:
        return self.own("shard", f"data/{language}/{split}")

    def duplex_shards_of(self, language: str, split: str) -> list[Path | str]:
        return self.own("duplex_shard", f"data/{language}/{DUPLEX}/{split}")

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

    def write_parquet(self, rel: str, table: pa.Table, fault_point: str | None = None) -> None:
        """Readers see the whole part or nothing. A kill test's fault point stops a local write half-way
        (a torn `.tmp`); on object storage, before the one PUT (there is no half-written object)."""
        if self.local:
            write_parquet_atomic(self.store.location(rel), table, fault_point)
            return
        if fault_point is not None:
            checkpoint(fault_point)
        self.store.write_atomic(rel, lambda fh: pq.write_table(table, fh))

    def clean_unfinished(self) -> list[Path | str]:
        """Remove the pipeline's own temp files (`is_own_temp`: never a user's `notes/draft.tmp`), tars whose
        manifest part was never written (a crash between the two), manifest parts whose tar did not reach the
        disk (a power cut before the folders' fsync), duplex parts whose main part is missing and, on S3,
        multipart uploads of own names never completed (a killed writer). Only the pipeline's own names are
        listed, so nothing it did not write is ever removed; each removal is logged."""
        store = self.store
        everything = store.list_files()
        removed = [rel for rel in everything if is_own_temp(rel) and not (
            store.local and (store.root / rel).is_symlink())]
        named = {kind: [rel for rel in everything if is_own_name(rel, kind)]
                 for kind in ("shard", "manifest", "duplex_shard", "duplex_manifest")}
        finished, written = {_stem(p) for p in named["manifest"]}, {_stem(t) for t in named["shard"]}
        removed += [t for t in named["shard"] if _stem(t) not in finished]
        removed += [p for p in named["manifest"] if _stem(p) not in written]
        main_finished = finished - {_stem(p) for p in removed}
        duplex_finished = {_stem(p) for p in named["duplex_manifest"]} & main_finished
        duplex_written = {_stem(t) for t in named["duplex_shard"]}
        removed += [t for t in named["duplex_shard"] if _stem(t) not in duplex_finished]
        removed += [p for p in named["duplex_manifest"]
                    if _stem(p) not in duplex_written or _stem(p) not in main_finished]
        for rel in removed:
            log.warning("removing %s, left unfinished by an interrupted run", store.location(rel))
            store.remove(rel)
        for rel, upload_id in store.unfinished_uploads():
            if is_own_name(rel):
                log.warning("aborting the unfinished upload of %s, left by an interrupted run", store.location(rel))
                store.abort_upload(rel, upload_id)
                removed.append(rel)
        return [store.location(rel) for rel in removed]

    def done_ids(self) -> np.ndarray:
        """64-bit hashes of every conversation already kept or rejected, sorted (8 bytes each)."""
        return part_ids(self.manifest_parts() + self.reject_parts(), self.store)

    def rejected_ids(self) -> np.ndarray:
        """64-bit hashes of every conversation rejected so far, sorted."""
        return part_ids(self.reject_parts(), self.store)

    def kept_per_language(self) -> tuple[np.ndarray, dict[str, int]]:
        """(sorted 64-bit hashes of the kept conversations, kept conversations per language), from the manifest."""
        ids: dict[str, str] = {}
        for p in self.manifest_parts():
            table = self.store.read_table(p, columns=["conversation_id", "language"])
            ids.update(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))
        per_language: dict[str, int] = {}
        for language in ids.values():
            per_language[language] = per_language.get(language, 0) + 1
        return ids_to_u64(ids), per_language


def _stem(rel: str) -> str:
    return PurePosixPath(rel).stem


def part_ids(parts: list[Path | str], store: Store | None = None) -> np.ndarray:
    """64-bit hashes of the conversation_id column of Parquet parts (local paths, or locations in `store`); a
    damaged part is a ConfigError naming it (a resume set read from half a file would silently redo or skip
    conversations)."""
    ids: list[str] = []
    for p in parts:
        try:
            table = store.read_table(p, ["conversation_id"]) if store is not None else pq.read_table(
                p, columns=["conversation_id"])
            ids += table.column(0).to_pylist()
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise ConfigError(f"{p}: damaged Parquet part ({str(exc).splitlines()[0][:160]}); `speechchat "
                              f"verify-output` lists what is wrong; move the file out of the folder (its "
                              "conversations are then made again) and rerun") from None
    return ids_to_u64(c for c in ids if isinstance(c, str))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _existing_ancestor_problem(path: Path) -> str | None:
    """The first existing folder above `path` must be a folder (else mkdir fails with NotADirectoryError)."""
    for parent in path.absolute().parents:
        try:
            mode = os.stat(parent).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"{parent}: {exc.strerror}"
        return None if stat.S_ISDIR(mode) else f"{parent} is a file, not a folder"
    return None


def _target_mode(path: Path) -> tuple[int | None, str | None]:
    """(the mode of what is at `path`, None if nothing is there; why it cannot be used at all, or None)."""
    if not str(path).strip():
        return None, "the path is empty"
    try:
        return os.stat(path).st_mode, None
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as exc:
        return None, exc.strerror or str(exc)


def file_target_problem(path: Path) -> str | None:
    """Why `path` cannot become a new file by an atomic rename (a folder, a device, a pipe, a file as one of
    its folders), or None. Replacing a character device such as /dev/full with a file would break the system."""
    mode, problem = _target_mode(path)
    if problem:
        return problem
    if mode is not None and stat.S_ISDIR(mode):
        return f"is a folder; give a file name in it, e.g. {Path(path) / 'specs.parquet'}"
    if mode is not None and not stat.S_ISREG(mode):
        return f"exists and is {_kind(mode)}, not a regular file; refusing to replace it"
    return _existing_ancestor_problem(Path(path))


def folder_target_problem(path: Path) -> str | None:
    """Why `path` cannot be (or become) an output folder, or None."""
    mode, problem = _target_mode(path)
    if problem:
        return problem
    if mode is not None and not stat.S_ISDIR(mode):
        return f"exists and is {'a file' if stat.S_ISREG(mode) else _kind(mode)}, not a folder"
    return _existing_ancestor_problem(Path(path))


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
    # a fresh file, never through whatever already has the temp name (a planted symlink would point the
    # write at someone else's file, a named pipe would block): the old name is ours, and unlinked first
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with open(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(tmp: Path, path: Path) -> None:
    """Rename a fsynced temp file into place; the name is durable once `sync_folders` has run. Never over
    anything but a regular file (a device, a pipe, a folder is not ours to replace)."""
    try:
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise FileExistsError(errno.EEXIST, f"refusing to replace {_kind(mode)} with a file", str(path))
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


def write_parquet_atomic(path: Path, table: pa.Table, fault_point: str | None = None) -> None:
    if fault_point is not None and armed(fault_point):  # a kill test stops the job with half the file written
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()

        def write_in_halves(fh: io.BufferedWriter) -> None:
            fh.write(data[: len(data) // 2])
            fh.flush()
            checkpoint(fault_point)
            fh.write(data[len(data) // 2:])

        atomic_write(path, write_in_halves)
        return
    atomic_write(path, lambda fh: pq.write_table(table, fh))
