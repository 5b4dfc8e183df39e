"""Shard: write kept conversations as WebDataset tars (one sample per exchange) plus manifest and rejects.

One call = one batch of conversations = at most one tar per (language, split), named after a hash of
the conversation IDs it holds, so a retried batch rewrites the same file instead of adding a duplicate.
Order of commits: tar (atomic rename) -> its manifest part (atomic) -> rejects part (atomic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.faults import checkpoint
from pipeline.io.layout import Layout, atomic_write, write_parquet_atomic
from pipeline.records import OUTCOME_SCHEMA, is_rejected, reject, rows_to_table, table_to_rows

log = logging.getLogger(__name__)

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


def write_tar(fh: Any, samples: list[dict[str, Any]]) -> tuple[dict[str, int], str]:
    """Write the samples as one uncompressed tar (members as webdataset's TarWriter names and orders them:
    `{key}.{ext}`, extensions sorted, mode 0444, owner bigdata); return each sample's offset and the sha256.

    Headers come from `tarfile.TarInfo`; payloads go straight to the file, hashed on the way. (tarfile's
    stream writer, under webdataset's TarWriter, copies every payload through a BytesIO and its own 10 KB
    record buffer, and the shard then had to be read back twice for its checksum and offsets: measured at
    0.37 of a raw write of the same bytes, see bench/run.py row 5.) The offset of a sample is where its
    first member's header starts, what `member_offsets` reads back. A whole-second mtime keeps every
    header plain ustar (a float mtime costs each member an extra pax header).
    """
    sha, offsets, pos, mtime = hashlib.sha256(), {}, 0, int(time.time())

    def put(data: bytes | memoryview) -> None:
        nonlocal pos
        sha.update(data)
        fh.write(data)
        pos += len(data)

    for sample in samples:
        key = sample["__key__"]
        offsets[key] = pos
        for ext in sorted(k for k in sample if not k.startswith("_")):
            data = sample[ext].encode() if isinstance(sample[ext], str) else sample[ext]
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"sample {key}: .{ext} is {type(data).__name__}, not bytes")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), mtime, 0o444, "bigdata", "bigdata"
            put(info.tobuf(tarfile.PAX_FORMAT, "utf-8"))  # plain ustar unless a name needs more
            put(data)
            if len(data) % tarfile.BLOCKSIZE:
                put(tarfile.NUL * (tarfile.BLOCKSIZE - len(data) % tarfile.BLOCKSIZE))
    put(tarfile.NUL * (2 * tarfile.BLOCKSIZE))  # end-of-archive, then pad to a whole record as tarfile does
    if pos % tarfile.RECORDSIZE:
        put(tarfile.NUL * (tarfile.RECORDSIZE - pos % tarfile.RECORDSIZE))
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
        name = f"shard-{self.batch_name(rows)}"
        tar_path = self.layout.shard_dir(language, split) / f"{name}.tar"
        samples = [s for row in rows for s in conversation_samples(row, self.license_tags)]
        written: list[tuple[dict[str, int], str]] = []
        atomic_write(tar_path, lambda fh: written.append(write_tar(fh, samples)))
        checkpoint("shard.between_tar_and_manifest")
        offsets, digest = written[-1]
        shard_rel = str(tar_path.relative_to(self.layout.root))
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
        write_parquet_atomic(self.layout.manifest / f"{name}.parquet", rows_to_table(manifest, MANIFEST_SCHEMA))
        checkpoint("shard.after_manifest")
        return shard_rel, manifest

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
            write_parquet_atomic(self.layout.rejects / f"part-{self.batch_name(rejected)}.parquet", table)
            outcomes += [{**_usage(r), "conversation_id": r["conversation_id"], "language": r["language"], "outcome": "rejected",
                          "reject_stage": r["reject_stage"], "reject_reason": r["reject_reason"], "exchanges": 0,
                          "audio_s": 0.0} for r in rejected]
        return rows_to_table(outcomes, OUTCOME_SCHEMA)

