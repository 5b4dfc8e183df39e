"""Shard: write kept conversations as WebDataset tars (one sample per exchange) plus manifest and rejects.

One call = one batch of conversations = at most one tar per (language, split), named after a hash of
the conversation IDs it holds, so a retried batch rewrites the same file instead of adding a duplicate.
Order of commits: tar (atomic rename) -> its manifest part (atomic) -> rejects part (atomic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.faults import armed, checkpoint, inject
from pipeline.io.layout import TMP_SUFFIX, Layout, publish, sync_folders, write_parquet_atomic, write_tmp
from pipeline.records import OUTCOME_SCHEMA, is_rejected, reject, rows_to_table, table_to_rows

log = logging.getLogger(__name__)

_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024

SAMPLE_SCHEMA_VERSION = 2  # 2: per-side dnsmos_* and speaker_similarity

MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("conversation_id", pa.string()), ("exchange_index", pa.int32()),
    ("exchange_count", pa.int32()), ("language", pa.string()), ("split", pa.string()), ("domain", pa.string()),
    ("topic", pa.string()), ("scenario", pa.string()),
    ("shard", pa.string()), ("shard_sha256", pa.string()), ("offset", pa.int64()),
    ("user_speaker_id", pa.string()), ("assistant_speaker_id", pa.string()),
    ("user_duration_s", pa.float64()), ("assistant_duration_s", pa.float64()),
    ("user_error_rate", pa.float64()), ("assistant_error_rate", pa.float64()),
    # added with sample schema 2 (older manifest parts lack them; readers promote to null)
    ("user_dnsmos_ovrl", pa.float64()), ("assistant_dnsmos_ovrl", pa.float64()),
    ("user_speaker_similarity", pa.float64()), ("assistant_speaker_similarity", pa.float64()),
])

REJECTS_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("language", pa.string()), ("stage", pa.string()),
    ("reason", pa.string()), ("details", pa.string()), ("topic", pa.string()),
])


def sample_key(conversation_id: str, exchange: int) -> str:
    return f"{conversation_id}_{exchange:03d}"


def _side(turn: dict[str, Any]) -> dict[str, Any]:
    # No nulls: `datasets` infers column types from the first samples, and a null there breaks later rows.
    return {
        "display_text": turn["display_text"] or "",
        "spoken_text": turn["spoken_text"] or "",
        "asr_text": turn["asr_text"] or "",
        "error_rate": float(turn["error_rate"] if turn["error_rate"] is not None else -1.0),
        "speaker_id": turn["speaker_id"] or "",
        "duration_s": round(float(turn["duration_s"] or 0.0), 3),
        "sample_rate": int(turn["sample_rate"] or 0),
        **{k: _score(turn.get(k)) for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "speaker_similarity")},
    }


def _score(value: float | None) -> float:
    return float(value) if value is not None else -1.0  # -1: not measured (same convention as error_rate)


def conversation_samples(row: dict[str, Any], license_tags: list[str]) -> list[dict[str, Any]]:
    """One WebDataset sample per exchange: {key}.json, {key}.user.flac, {key}.assistant.flac."""
    turns = row["turns"]
    count = len(turns) // 2
    samples = []
    for ex in range(count):
        user, assistant = turns[2 * ex], turns[2 * ex + 1]
        history = [f"{t['role']}: {t['display_text']}" for t in turns[: 2 * ex]]
        meta = {
            "schema_version": SAMPLE_SCHEMA_VERSION,
            "key": sample_key(row["conversation_id"], ex),
            "conversation_id": row["conversation_id"],
            "exchange_index": ex,
            "exchange_count": count,
            "language": row["language"],
            "split": row["split"],
            "domain": row["domain"] or "",
            "topic": row["topic"],
            "scenario": row["scenario"],
            "persona": row["persona"],
            "history": "\n".join(history),
            "user": _side(user),
            "assistant": _side(assistant),
            "models": {"llm": row["llm_model"] or "", "tts": row["tts_model"] or "", "asr": row["asr_model"] or ""},
            "config_digest": row["text_digest"],
            "licenses": list(license_tags),
        }
        samples.append({"__key__": meta["key"], "json": json.dumps(meta, ensure_ascii=False).encode(),
                        "user.flac": user["audio_flac"], "assistant.flac": assistant["audio_flac"]})
    return samples


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


def _usage(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) or 0 for k in ("llm_requests", "prompt_tokens", "completion_tokens")}


class ShardStage:
    """Not a `Stage`: it consumes conversation rows and returns small outcome rows (no audio) to the driver."""

    name = "shard"

    def __init__(self, out_dir: Path, run_id: str, license_tags: list[str], write_samples: bool = True,
                 quota: dict[str, int] | None = None):
        self.layout, self.run_id, self.license_tags = Layout(out_dir), run_id, list(license_tags)
        # exact-count mode: how many more conversations this run may keep per language (one shard actor
        # counts them; conversations past the quota are recorded as rejected, so a rerun skips them too)
        self.quota = dict(quota) if quota is not None else None
        self._seen: set[str] = set()  # IDs handled by this run: a duplicate in the stream is never written twice
        # False for a text-only run: record rejections, report the rest as "generated", write no tars
        self.write_samples = write_samples

    def batch_name(self, rows: list[dict[str, Any]]) -> str:
        ids = "\n".join(sorted(r["conversation_id"] for r in rows))
        return f"{self.run_id}-{hashlib.sha256(ids.encode()).hexdigest()[:12]}"

    def write_shard(self, rows: list[dict[str, Any]], language: str, split: str) -> tuple[str, list[dict[str, Any]]]:
        """Write one tar and its manifest part: both fsynced as `.tmp`, renamed (tar first), folders fsynced.

        The manifest part is made and fsynced on a second thread while the tar is fsynced, so the two waits
        overlap (the file system's journal can commit both at once), and one folder fsync covers both
        renames. A crash leaves at worst one of the two names, which a restart deletes with the `.tmp` files
        (`Layout.clean_unfinished`); readers of a live folder never see a part before its tar.
        """
        name = f"shard-{self.batch_name(rows)}"
        tar_path = self.layout.shard_dir(language, split) / f"{name}.tar"
        manifest_path = self.layout.manifest / f"{name}.parquet"
        shard_rel = str(tar_path.relative_to(self.layout.root))
        samples = (s for row in rows for s in conversation_samples(row, self.license_tags))
        made: dict[str, Any] = {}

        def write(fh: Any) -> None:  # write_tmp fsyncs the tar after this, while the manifest thread works
            offsets, digest = write_tar(fh, samples)
            made["rows"] = self._manifest_rows(rows, language, split, shard_rel, offsets, digest)
            table = rows_to_table(made["rows"], MANIFEST_SCHEMA)
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
        checkpoint("shard.between_tar_and_manifest")
        publish(manifest_tmp, manifest_path)
        sync_folders(tar_path, manifest_path)
        checkpoint("shard.after_manifest")
        return shard_rel, manifest

    @staticmethod
    def _manifest_rows(rows: list[dict[str, Any]], language: str, split: str, shard_rel: str,
                       offsets: dict[str, int], digest: str) -> list[dict[str, Any]]:
        manifest = []
        for row in rows:
            turns = row["turns"]
            for ex in range(len(turns) // 2):
                key, user, assistant = sample_key(row["conversation_id"], ex), turns[2 * ex], turns[2 * ex + 1]
                manifest.append({
                    "key": key, "conversation_id": row["conversation_id"], "exchange_index": ex,
                    "exchange_count": len(turns) // 2, "language": language, "split": split,
                    "domain": row["domain"] or "", "topic": row["topic"], "scenario": row["scenario"],
                    "shard": shard_rel, "shard_sha256": digest, "offset": offsets[key],
                    "user_speaker_id": user["speaker_id"], "assistant_speaker_id": assistant["speaker_id"],
                    "user_duration_s": user["duration_s"], "assistant_duration_s": assistant["duration_s"],
                    "user_error_rate": user["error_rate"], "assistant_error_rate": assistant["error_rate"],
                    "user_dnsmos_ovrl": user.get("dnsmos_ovrl"), "assistant_dnsmos_ovrl": assistant.get("dnsmos_ovrl"),
                    "user_speaker_similarity": user.get("speaker_similarity"),
                    "assistant_speaker_similarity": assistant.get("speaker_similarity"),
                })
        return manifest

    def _apply_quota(self, rows: list[dict[str, Any]]) -> None:
        if self.quota is None:
            return
        for row in rows:
            if is_rejected(row):
                continue
            left = self.quota.get(row["language"], 0)
            if left <= 0:
                reject(row, self.name, "target_reached", f"{row['language']}: target of kept conversations reached")
            else:
                self.quota[row["language"]] = left - 1
                if left == 1:  # crash tests: the actor dies as it takes the last place (the last round's end)
                    inject("shard.quota_filled", row["language"])

    def __call__(self, batch: pa.Table | dict) -> pa.Table:
        rows = []
        for row in table_to_rows(batch):
            if row["conversation_id"] in self._seen:
                log.warning("conversation %s arrived twice in one run; the second copy is dropped", row["conversation_id"])
                continue
            self._seen.add(row["conversation_id"])
            rows.append(row)
        self._apply_quota(rows)
        kept, rejected = [r for r in rows if not is_rejected(r)], [r for r in rows if is_rejected(r)]
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in kept:
            groups[(row["language"], row["split"])].append(row)
        outcomes = []
        if not self.write_samples:
            outcomes += [{**_usage(r), "conversation_id": r["conversation_id"], "language": r["language"],
                          "outcome": "generated", "exchanges": r["num_exchanges"], "audio_s": 0.0} for r in kept]
            groups.clear()
        for (language, split), group in sorted(groups.items()):
            shard_rel, _ = self.write_shard(group, language, split)
            for row in group:
                outcomes.append({**_usage(row),
                    "conversation_id": row["conversation_id"], "language": language, "outcome": "kept",
                    "exchanges": len(row["turns"]) // 2, "audio_s": sum(t["duration_s"] or 0 for t in row["turns"]),
                    "user_speaker_id": row["user_speaker_id"], "assistant_speaker_id": row["assistant_speaker_id"],
                    "shard": shard_rel})
        if rejected:
            table = rows_to_table([{"conversation_id": r["conversation_id"], "language": r["language"],
                                    "stage": r["reject_stage"], "reason": r["reject_reason"],
                                    "details": r["reject_details"] or "", "topic": r["topic"]} for r in rejected],
                                  REJECTS_SCHEMA)
            write_parquet_atomic(self.layout.rejects / f"part-{self.batch_name(rejected)}.parquet", table,
                                 fault_point="shard.mid_rejects_part")
            outcomes += [{**_usage(r), "conversation_id": r["conversation_id"], "language": r["language"], "outcome": "rejected",
                          "reject_stage": r["reject_stage"], "reject_reason": r["reject_reason"], "exchanges": 0,
                          "audio_s": 0.0} for r in rejected]
        return rows_to_table(outcomes, OUTCOME_SCHEMA)

