"""Writing shards: WebDataset tars and their manifest parts, committed so that a crash never leaves half a shard.

A shard is finished when its tar is in place *and* its manifest part is written: the manifest part is the
commit record, and every reader of the pipeline (verify-output, stats, the card, publish, the loader) lists
shards through the manifest, so a tar without its part is invisible to them until a restart deletes it
(`Layout.clean_unfinished`).
- Local folder: both are written and fsynced as `.tmp`, then renamed tar first, and one folder fsync covers
  both renames; a restart deletes a tar whose manifest part is missing and a part whose tar is missing.
- Object storage (no rename): the tar is streamed to its final name (`data/<lang>/<split>/shard-<run>-<hash of
  the conversation IDs>.tar`) as a multipart upload that becomes visible only when completed; then the manifest
  part is put (one PUT, visible whole or not at all). A killed writer leaves either an unfinished upload
  (aborted on restart) or a tar without its part (deleted on restart); a retried batch writes the same names.
  Nothing is staged on local disk.
The tar bytes are webdataset's (`TarWriter`) byte for byte: a test compares them.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.faults import armed, checkpoint
from pipeline.io.layout import DUPLEX, TMP_SUFFIX, Layout, publish, sync_folders, write_tmp
from pipeline.schema import (
    DUPLEX_MANIFEST_SCHEMA,
    MANIFEST_SCHEMA,
    conversation_samples,
    duplex_manifest_rows,
    duplex_sample,
    manifest_rows,
    rows_to_table,
)

_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class _Headers:
    """ustar headers for regular members sharing mode 0444, owner bigdata and one mtime, byte for byte what
    `tarfile.TarInfo.tobuf(PAX_FORMAT)` gives (webdataset's TarWriter writes through it).

    tarfile builds each header from fifteen formatted fields (about 30 us a member, as much as hashing a
    60 KB payload); here one header from tarfile is the template and only the name, size and checksum
    fields change. Names that are not ASCII or longer than 100 bytes go to tarfile, which adds a pax header.
    """

    def __init__(self, mtime: int):
        self.mtime = mtime
        t = self._tarfile_header("x", 0)
        if len(t) != tarfile.BLOCKSIZE:
            raise RuntimeError(f"tarfile wrote a {len(t)}-byte header for a plain member; expected {tarfile.BLOCKSIZE}")
        # the checksum is the byte sum of the header with its own field read as 8 spaces
        self.base = sum(t) - sum(t[0:100]) - sum(t[124:136]) - sum(t[148:156]) + 8 * ord(" ")
        self.after_name, self.after_size, self.after_chksum = t[100:124], t[136:148], t[156:]

    def _tarfile_header(self, name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = size, self.mtime, 0o444, "bigdata", "bigdata"
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8")

    def __call__(self, name: str, size: int) -> bytes:
        raw = name.encode("ascii", "replace")
        if not name.isascii() or len(raw) > 100 or size >= 8 ** 11:
            return self._tarfile_header(name, size)
        size_field = b"%011o\0" % size
        chksum = self.base + sum(raw) + sum(size_field)
        return b"".join((raw.ljust(100, b"\0"), self.after_name, size_field, self.after_size,
                         b"%06o\0 " % chksum, self.after_chksum))


def tar_chunks(samples: Iterable[dict[str, Any]], offsets: dict[str, int],
               chunk_bytes: int = 1 << 20) -> Iterator[list[bytes | memoryview]]:
    """The samples as one uncompressed tar, in chunks of about `chunk_bytes`: lists of buffers to write in
    order. Records each sample's offset in `offsets` as it goes.

    Members are named and ordered as webdataset's TarWriter does (`{key}.{ext}`, extensions sorted, mode
    0444, owner bigdata). Payloads are referenced, not copied; each payload's padding and the next header
    are glued into one small buffer. The offset of a sample is where its first member's header starts,
    what `member_offsets` reads back. A whole-second mtime keeps every header plain ustar (a float mtime
    costs each member an extra pax header).
    """
    header, chunk, glue, pos, chunk_start = _Headers(int(time.time())), [], bytearray(), 0, 0
    for sample in samples:  # pos: bytes in the chunks so far; `glue` is still to come before the next payload
        key = sample["__key__"]
        offsets[key] = pos + len(glue)
        for ext in sorted(k for k in sample if not k.startswith("_")):
            data = sample[ext].encode() if isinstance(sample[ext], str) else sample[ext]
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"sample {key}: .{ext} is {type(data).__name__}, not bytes")
            size = memoryview(data).nbytes
            glue += header(f"{key}.{ext}", size)
            chunk += (bytes(glue), data)
            pos += len(glue) + size
            glue[:] = tarfile.NUL * (-size % tarfile.BLOCKSIZE)
        if pos - chunk_start >= chunk_bytes:
            yield chunk
            chunk, chunk_start = [], pos
    glue += tarfile.NUL * (2 * tarfile.BLOCKSIZE)  # end-of-archive, then pad to a whole record as tarfile does
    glue += tarfile.NUL * (-(pos + len(glue)) % tarfile.RECORDSIZE)
    yield [*chunk, bytes(glue)]


_pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}


def _pool(name: str) -> ThreadPoolExecutor:
    """A one-thread pool kept for the life of the process (starting threads per shard cost milliseconds);
    a new one after a fork, whose child inherits the pool but not its thread."""
    pid = os.getpid()
    if _pools.get(name, (None,))[0] != pid:
        _pools[name] = (pid, ThreadPoolExecutor(1, thread_name_prefix=name))
    return _pools[name][1]


def _hash(sha: Any, buffers: list[bytes | memoryview]) -> None:
    for buf in buffers:
        sha.update(buf)  # hashlib lets go of the GIL for buffers over 2 KB, so this runs beside the writes


def write_buffers(fh: Any, buffers: list[bytes | memoryview]) -> None:
    """Write the buffers in order, straight to the file descriptor where there is one (no copy through
    the file object's buffer), with as few system calls as `writev` allows, and start their writeback."""
    try:
        fd = fh.fileno()
    except (AttributeError, OSError):  # io.UnsupportedOperation (BytesIO) is an OSError
        for buf in buffers:
            fh.write(buf)
        return
    fh.flush()  # anything written through `fh` before goes first
    start = fh.tell() if fh.seekable() else None
    views, i = [memoryview(b).cast("B") for b in buffers], 0
    while i < len(views):
        done = os.writev(fd, views[i:i + _IOV_MAX])
        # a regular file takes the whole batch unless the disk fills or a signal interrupts; then resume
        while i < len(views) and done >= views[i].nbytes:
            done -= views[i].nbytes
            i += 1
        if done:
            views[i] = views[i][done:]
    if start is not None and hasattr(os, "posix_fadvise"):
        # Start writing these bytes to disk now (Linux begins writeback for DONTNEED and drops the pages
        # once clean: nothing reads a shard back), so the fsync at the end waits for the last chunk only.
        os.posix_fadvise(fd, start, sum(memoryview(b).nbytes for b in buffers), os.POSIX_FADV_DONTNEED)


def write_tar(fh: Any, samples: Iterable[dict[str, Any]]) -> tuple[dict[str, int], str]:
    """Write the samples as one uncompressed tar (see `tar_chunks`); return each sample's offset and the sha256.

    Three things overlap, chunk by chunk: encoding the samples (JSON, headers: this thread; pass a generator
    to encode lazily), writing them (a writer thread, in the kernel) and hashing them (a hasher thread);
    the two threads let go of the GIL. (tarfile's stream writer, under webdataset's TarWriter, copies every
    payload through a BytesIO and its own 10 KB record buffer, and the shard then had to be read back twice
    for its checksum and offsets: measured at 0.37 of a raw write of the same bytes, see bench/run.py row 5.)
    """
    offsets: dict[str, int] = {}
    sha, writer, hasher = hashlib.sha256(), _pool("tar-write"), _pool("tar-sha256")
    pending = []  # one-thread pools run their jobs in order, so chunks are written and hashed in order
    torn = armed("shard.mid_tar")  # a kill test stops the job with part of the tar on disk
    try:
        for chunk in tar_chunks(samples, offsets):
            if torn:  # write the first half, wait for it to reach the file, pause there
                first, chunk = chunk[: len(chunk) // 2], chunk[len(chunk) // 2:]
                writer.submit(write_buffers, fh, first).result()
                pending.append(hasher.submit(_hash, sha, first))
                checkpoint("shard.mid_tar")
            pending += (writer.submit(write_buffers, fh, chunk), hasher.submit(_hash, sha, chunk))
            if pending[0].done():  # surface a write error (a full disk) before encoding the rest
                pending.pop(0).result()
    finally:
        for job in pending:  # never return (or raise) while a thread still writes to `fh`
            job.exception()
    for job in pending:
        job.result()
    return offsets, sha.hexdigest()


def member_offsets(tar_path: Path) -> dict[str, int]:
    """Byte offset of each sample's first member header, for random access from the manifest."""
    offsets: dict[str, int] = {}
    with tarfile.open(tar_path) as tf:
        for member in tf:
            offsets.setdefault(member.name.split(".", 1)[0], member.offset)
    return offsets


def write_shard(layout: Layout, name: str, rows: list[dict[str, Any]], language: str, split: str,
                license_tags: list[str], keep_clean: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """Write one tar (`data/<language>/<split>/<name>.tar`) and its manifest part; return the tar's path
    relative to the output and the manifest rows."""
    samples = (s for row in rows for s in conversation_samples(row, license_tags, keep_clean=keep_clean))
    return _commit_shard(layout, f"data/{language}/{split}/{name}.tar", f"manifest/{name}.parquet",
                         samples, lambda rel, offsets, digest: manifest_rows(rows, language, split, rel, offsets, digest),
                         MANIFEST_SCHEMA, "shard")


def write_duplex_shard(layout: Layout, name: str, rows: list[dict[str, Any]], language: str,
                       split: str) -> tuple[str, list[dict[str, Any]]] | None:
    """Write the duplex samples of `rows` (`data/<language>/duplex/<split>/<name>.tar`) and their manifest part
    (`manifest/duplex/<name>.parquet`); None when no row has one. Committed before the main shard of the same
    name, whose manifest part finishes both (`Layout.clean_unfinished`)."""
    samples = [s for s in (duplex_sample(row) for row in rows) if s is not None]
    if not samples:
        return None
    return _commit_shard(layout, f"data/{language}/{DUPLEX}/{split}/{name}.tar", f"manifest/{DUPLEX}/{name}.parquet",
                         iter(samples),
                         lambda rel, offsets, digest: duplex_manifest_rows(rows, language, split, rel, offsets, digest),
                         DUPLEX_MANIFEST_SCHEMA, "duplex")


def _commit_shard(layout: Layout, shard_rel: str, manifest_rel: str, samples: Iterator[dict[str, Any]],
                  make_rows: Callable[[str, dict[str, int], str], list[dict[str, Any]]], schema: pa.Schema,
                  fault_prefix: str) -> tuple[str, list[dict[str, Any]]]:
    """The tar and its manifest part, committed tar first.

    The manifest part is made and fsynced on a second thread while the tar is fsynced, so the two waits
    overlap (the file system's journal can commit both at once), and one folder fsync covers both renames.
    """
    if not layout.local:
        return _commit_to_object_store(layout, shard_rel, manifest_rel, samples, make_rows, schema, fault_prefix)
    tar_path, manifest_path = layout.store.location(shard_rel), layout.store.location(manifest_rel)
    made: dict[str, Any] = {}

    def write(fh: Any) -> None:  # write_tmp fsyncs the tar after this, while the manifest thread works
        offsets, digest = write_tar(fh, samples)
        made["rows"] = make_rows(shard_rel, offsets, digest)
        table = rows_to_table(made["rows"], schema)
        made["job"] = _pool("shard-manifest").submit(write_tmp, manifest_path, lambda mfh: pq.write_table(table, mfh))

    try:
        tar_tmp = write_tmp(tar_path, write)  # returns after the tar's fsync
        manifest, manifest_tmp = made["rows"], made["job"].result()
    except BaseException:
        if "job" in made:
            made["job"].exception()  # let the manifest thread finish before removing what it wrote
        for path in (tar_path, manifest_path):
            path.with_name(path.name + TMP_SUFFIX).unlink(missing_ok=True)
        raise
    publish(tar_tmp, tar_path)
    checkpoint(f"{fault_prefix}.between_tar_and_manifest")
    publish(manifest_tmp, manifest_path)
    sync_folders(tar_path, manifest_path)
    checkpoint(f"{fault_prefix}.after_manifest")
    return shard_rel, manifest


def _commit_to_object_store(layout: Layout, shard_rel: str, manifest_rel: str, samples: Iterator[dict[str, Any]],
                            make_rows: Callable[[str, dict[str, int], str], list[dict[str, Any]]],
                            schema: pa.Schema, fault_prefix: str) -> tuple[str, list[dict[str, Any]]]:
    """`_commit_shard` on object storage: the tar streamed to its final key as a multipart upload, completed,
    then the manifest part (the commit record) put in one request."""
    upload = layout.store.upload(shard_rel)
    try:
        offsets, digest = write_tar(upload, samples)
        upload.flush_parts()
        checkpoint(f"{fault_prefix}.tar_uploading")  # every part sent, not completed: invisible, unfinished
        upload.complete()
    except BaseException:
        upload.abort()
        raise
    manifest = make_rows(shard_rel, offsets, digest)
    checkpoint(f"{fault_prefix}.between_tar_and_manifest")
    layout.write_parquet(manifest_rel, rows_to_table(manifest, schema))
    checkpoint(f"{fault_prefix}.after_manifest")
    return shard_rel, manifest
