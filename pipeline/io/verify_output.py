"""`speechchat verify-output DIR`: check that a dataset folder is whole and consistent.

Every tar opens; every sample has exactly json + user.flac + assistant.flac, all regular files; the JSON names
its own key; the audio members are FLAC of a sane length; checksums and byte offsets match the manifest;
manifest and tars list the same keys; no key or conversation appears twice, nor both kept and rejected; no temp
files are left behind. The folder may come from anywhere: members are read in bounded pieces (a JSON at most
MAX_JSON_BYTES, a FLAC only its 42-byte header), links and oversized members are problems, and a part that
does not open as Parquet is a problem too - never a traceback.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.layout import TMP_SUFFIX, Layout, file_sha256
from pipeline.schema import SAMPLE_PARTS

MAX_JSON_BYTES = 4 << 20        # a sample's metadata is a few KB
MAX_TURN_S = 600.0              # a turn longer than 10 minutes is not a conversation turn
# 10 minutes of 48 kHz 16-bit mono is 57.6 MB uncompressed; FLAC is smaller
MAX_FLAC_BYTES = 64 << 20
FLAC_HEADER_BYTES = 42          # "fLaC" + the STREAMINFO block, which holds the rate and the length
MANIFEST_COLUMNS = ("key", "conversation_id", "shard", "shard_sha256", "offset")


def _member_kind(m: tarfile.TarInfo) -> str:
    return ("a symbolic link" if m.issym() else "a hard link" if m.islnk() else "a folder" if m.isdir()
            else "a device or pipe")


def flac_seconds(header: bytes) -> float | None:
    """Duration declared by a FLAC's STREAMINFO (None when the header is too short or declares no length)."""
    if len(header) < FLAC_HEADER_BYTES or header[4] & 0x7F != 0:  # the first block must be STREAMINFO
        return None
    packed = int.from_bytes(header[18:26], "big")
    rate, samples = packed >> 44, packed & ((1 << 36) - 1)
    return samples / rate if rate and samples else None


def _check_member(rel: str, key: str, ext: str, m: tarfile.TarInfo, tf: tarfile.TarFile,
                  problems: list[str]) -> bytes | None:
    """The bytes kept of a member (the whole JSON, a FLAC's header), or None after listing what is wrong."""
    if not m.isfile():
        problems.append(f"{rel}: member {m.name!r} is {_member_kind(m)}, not a regular file")
        return None
    limit = MAX_JSON_BYTES if ext == "json" else MAX_FLAC_BYTES if ext.endswith("flac") else None
    if limit is not None and m.size > limit:
        problems.append(f"{rel}: sample {key} {ext} declares {m.size:,} bytes (more than {limit:,})")
        return None
    fh = tf.extractfile(m)
    if fh is None:
        return b""
    data = fh.read(FLAC_HEADER_BYTES if ext.endswith("flac") else MAX_JSON_BYTES)
    if ext.endswith("flac") and data.startswith(b"fLaC"):
        seconds = flac_seconds(data)
        if seconds is not None and seconds > MAX_TURN_S:
            problems.append(f"{rel}: sample {key} {ext} lasts {seconds:,.0f} s (more than {MAX_TURN_S:.0f} s)")
    return data


def _check_tar(tar_path: Path, rows: list[dict], problems: list[str]) -> None:
    rel = tar_path.name
    if file_sha256(tar_path) != rows[0]["shard_sha256"]:
        problems.append(f"{rel}: sha256 differs from the manifest")
    members: dict[str, dict[str, bytes | None]] = defaultdict(dict)
    first_offset: dict[str, int] = {}
    try:
        with tarfile.open(tar_path) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                first_offset.setdefault(key, m.offset)
                members[key][ext] = _check_member(rel, key, ext, m, tf, problems)
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append(f"{rel}: does not open as a tar ({exc})")
        return
    manifest_keys = {r["key"] for r in rows}
    for key in sorted(set(members) - manifest_keys):
        problems.append(f"{rel}: sample {key} is not in the manifest")
    for key in sorted(manifest_keys - set(members)):
        problems.append(f"{rel}: manifest sample {key} is missing from the tar")
    for row in rows:
        key = row["key"]
        parts = members.get(key)
        if parts is None:
            continue
        if set(parts) != SAMPLE_PARTS:
            problems.append(f"{rel}: sample {key} has parts {sorted(parts)}, expected {sorted(SAMPLE_PARTS)}")
            continue
        if any(data is None for data in parts.values()):
            continue  # listed above
        try:
            meta = json.loads(parts["json"])
            if not isinstance(meta, dict) or meta.get("key") != key:
                problems.append(f"{rel}: sample {key} JSON names key "
                                f"{meta.get('key') if isinstance(meta, dict) else None!r}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            problems.append(f"{rel}: sample {key} JSON does not parse")
        for side in ("user.flac", "assistant.flac"):
            if not parts[side].startswith(b"fLaC"):
                problems.append(f"{rel}: sample {key} {side} is not FLAC")
        if first_offset.get(key) != row["offset"]:
            problems.append(f"{rel}: sample {key} offset {row['offset']} in the manifest, {first_offset.get(key)} in the tar")


def read_part(part: Path, root: Path, problems: list[str], columns: tuple[str, ...] | None = None) -> list[dict] | None:
    """A manifest or rejects part's rows, or None after listing why it cannot be read (truncated, not Parquet,
    columns missing)."""
    rel = part.relative_to(root)
    try:
        table = pq.read_table(part)
    except (pa.ArrowException, OSError) as exc:
        problems.append(f"{rel}: does not open as Parquet ({str(exc).splitlines()[0][:200]})")
        return None
    missing = [c for c in columns or () if c not in table.column_names]
    if missing:
        problems.append(f"{rel}: lacks the column(s) {', '.join(missing)}")
        return None
    return table.select(list(columns)).to_pylist() if columns else table.to_pylist()


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the filesystem
        return False


def verify_output(root: Path) -> list[str]:
    layout = Layout(root)
    problems: list[str] = []
    if not layout.data.is_dir() and not layout.manifest.is_dir():
        return [f"{root}: not a speechchat output folder (no data/ or manifest/)"]
    problems += [f"leftover temp file {p.relative_to(root)}" for p in sorted(root.rglob(f"*{TMP_SUFFIX}"))]
    manifest_stems = {p.stem for p in layout.manifest_parts()}
    problems += [f"{t.relative_to(root)}: no manifest part (unfinished shard)" for t in layout.shards()
                 if t.stem not in manifest_stems]
    keys: Counter = Counter()
    kept_ids: set[str] = set()
    for part in layout.manifest_parts():
        rows = read_part(part, root, problems, MANIFEST_COLUMNS)
        if rows is None:
            continue
        if not rows:
            problems.append(f"{part.relative_to(root)}: empty manifest part")
            continue
        bad = [i for i, r in enumerate(rows) if not all(isinstance(r[c], str) and r[c] and "\0" not in r[c]
                                                        for c in ("key", "conversation_id", "shard"))]
        if bad:
            problems.append(f"{part.relative_to(root)}: {len(bad)} row(s) without a key, conversation_id or "
                            f"shard (first: row {bad[0]})")
            rows = [r for i, r in enumerate(rows) if i not in set(bad)]
        keys.update(r["key"] for r in rows)
        kept_ids.update(r["conversation_id"] for r in rows)
        by_shard: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_shard[r["shard"]].append(r)
        for shard, shard_rows in by_shard.items():
            tar_path = (root / shard).resolve()
            if root.resolve() not in tar_path.parents:
                problems.append(f"{part.relative_to(root)}: shard path {shard!r} points outside the output")
            elif not _is_file(tar_path):
                problems.append(f"{part.relative_to(root)}: shard {shard} is missing")
            else:
                _check_tar(tar_path, shard_rows, problems)
    problems += [f"key {k} appears {n} times" for k, n in sorted(keys.items()) if n > 1]
    rejected = Counter(str(r["conversation_id"]) for p in layout.reject_parts()
                       for r in read_part(p, root, problems, ("conversation_id",)) or [])
    problems += [f"conversation {c} is rejected {n} times" for c, n in sorted(rejected.items()) if n > 1]
    problems += [f"conversation {c} is both kept and rejected" for c in sorted(kept_ids & set(rejected))]
    return problems
