"""`speechchat verify-output DIR`: check that a dataset folder is whole and consistent.

Every tar opens; every sample has exactly json + user.flac + assistant.flac, all regular files; the JSON names
its own key; the audio members are FLAC of a sane length; checksums and byte offsets match the manifest;
manifest and tars list the same keys; no key or conversation appears twice, nor both kept and rejected; no temp
files are left behind. The folder may come from anywhere: members are read in bounded pieces (a JSON at most
MAX_JSON_BYTES, a FLAC only its 42-byte header), links and oversized members are problems, and a part that
does not open as Parquet is a problem too - never a traceback.
The duplex subset (data/<lang>/duplex/, manifest/duplex/) is held to the same rules, plus: each sample is
json + duplex.flac (stereo 16 kHz FLAC, read whole to decode it, at most MAX_DUPLEX_FLAC_BYTES), its JSON names
its conversation and its segments lie inside the recording, and every duplex conversation is a kept one.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import soundfile as sf

from pipeline.io.layout import MARKER, Layout, file_sha256, is_own_temp
from pipeline.schema import DUPLEX_PARTS, OPTIONAL_AUDIO_FILES, SAMPLE_PARTS

MAX_JSON_BYTES = 4 << 20        # a sample's metadata is a few KB
MAX_TURN_S = 600.0              # a turn longer than 10 minutes is not a conversation turn
# 10 minutes of 48 kHz 16-bit mono is 57.6 MB uncompressed; FLAC is smaller
MAX_FLAC_BYTES = 64 << 20
MAX_RECORDING_S = 4 * 3600.0    # a duplex recording is a whole conversation
MAX_DUPLEX_FLAC_BYTES = 512 << 20
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
    whole = ext == "duplex.flac"  # decoded to check the channels and the timeline
    limit = (MAX_JSON_BYTES if ext == "json" else MAX_DUPLEX_FLAC_BYTES if whole
             else MAX_FLAC_BYTES if ext.endswith("flac") else None)
    if limit is not None and m.size > limit:
        problems.append(f"{rel}: sample {key} {ext} declares {m.size:,} bytes (more than {limit:,})")
        return None
    fh = tf.extractfile(m)
    if fh is None:
        return b""
    data = fh.read(MAX_DUPLEX_FLAC_BYTES if whole else FLAC_HEADER_BYTES if ext.endswith("flac") else MAX_JSON_BYTES)
    if ext.endswith("flac") and data.startswith(b"fLaC"):
        seconds, longest = flac_seconds(data[:FLAC_HEADER_BYTES]), MAX_RECORDING_S if whole else MAX_TURN_S
        if seconds is not None and seconds > longest:
            problems.append(f"{rel}: sample {key} {ext} lasts {seconds:,.0f} s (more than {longest:.0f} s)")
    return data


class _HashingReader:
    """A file wrapper that hashes what is read, so a tar on object storage is checked and checksummed in one
    pass (one download, nothing staged on disk)."""

    def __init__(self, fh: Any):
        self.fh, self.sha = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        return data

    def finish(self) -> str:
        while self.read(1 << 20):
            pass
        return self.sha.hexdigest()


def _read_members(layout: Layout, tar: Path | str, rel: str, problems: list[str]
                  ) -> tuple[str, dict[str, dict[str, bytes | None]], dict[str, int], BaseException | None]:
    """(sha256, members' kept bytes by key and extension, first offset of each key, why the tar does not open)."""
    members: dict[str, dict[str, bytes | None]] = defaultdict(dict)
    first_offset: dict[str, int] = {}
    broken: BaseException | None = None

    def read(tf: tarfile.TarFile) -> None:
        for m in tf:
            key, _, ext = m.name.partition(".")
            first_offset.setdefault(key, m.offset)
            members[key][ext] = _check_member(rel, key, ext, m, tf, problems)

    if layout.local:
        digest = file_sha256(tar)
        try:
            with tarfile.open(tar, "r:") as tf:  # shards are plain tars: one reason, not one per compression
                read(tf)
        except (tarfile.TarError, OSError, EOFError) as exc:
            broken = exc
        return digest, members, first_offset, broken
    with layout.open(tar) as raw:
        reader = _HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:
                read(tf)
        except (tarfile.TarError, OSError, EOFError) as exc:
            broken = exc
        return reader.finish(), members, first_offset, broken


def _check_tar(layout: Layout, tar: Path | str, rows: list[dict], problems: list[str], duplex: bool = False) -> None:
    rel = layout.rel(tar).rsplit("/", 1)[-1]
    digest, members, first_offset, broken = _read_members(layout, tar, rel, problems)
    if digest != rows[0]["shard_sha256"]:
        problems.append(f"{rel}: sha256 differs from the manifest")
    if broken is not None:
        problems.append(f"{rel}: does not open as a tar ({broken})")
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
        expected = DUPLEX_PARTS if duplex else SAMPLE_PARTS
        if set(parts) != expected and (duplex or set(parts) != SAMPLE_PARTS | set(OPTIONAL_AUDIO_FILES)):
            problems.append(f"{rel}: sample {key} has parts {sorted(parts)}, expected {sorted(expected)}")
            continue
        if any(data is None for data in parts.values()):
            continue  # listed above
        try:
            meta = json.loads(parts["json"])
            named = (meta.get("conversation_id") if duplex else meta.get("key")) if isinstance(meta, dict) else None
            if named != key:
                problems.append(f"{rel}: sample {key} JSON names {'conversation' if duplex else 'key'} {named!r}")
            elif duplex:
                _check_timeline(rel, key, meta, parts["duplex.flac"], problems)
        except (json.JSONDecodeError, UnicodeDecodeError):
            problems.append(f"{rel}: sample {key} JSON does not parse")
        for side in sorted(p for p in parts if p.endswith(".flac")):
            if not parts[side].startswith(b"fLaC"):
                problems.append(f"{rel}: sample {key} {side} is not FLAC")
        if first_offset.get(key) != row["offset"]:
            problems.append(f"{rel}: sample {key} offset {row['offset']} in the manifest, {first_offset.get(key)} in the tar")


def read_part(part: Path | str, layout: Layout, problems: list[str], columns: tuple[str, ...] | None = None
              ) -> list[dict] | None:
    """A manifest or rejects part's rows, or None after listing why it cannot be read (truncated, not Parquet,
    columns missing)."""
    rel = layout.rel(part)
    try:
        table = layout.read_table(part)
    except (pa.ArrowException, OSError) as exc:
        problems.append(f"{rel}: does not open as Parquet ({str(exc).splitlines()[0][:200]})")
        return None
    missing = [c for c in columns or () if c not in table.column_names]
    if missing:
        problems.append(f"{rel}: lacks the column(s) {', '.join(missing)}")
        return None
    return table.select(list(columns)).to_pylist() if columns else table.to_pylist()


def _is_file(layout: Layout, location: Path | str) -> bool:
    try:
        return layout.store.is_file(location)
    except OSError:  # a name too long for the filesystem
        return False


def _check_timeline(rel: str, key: str, meta: dict, flac: bytes, problems: list[str]) -> None:
    try:
        info = sf.info(io.BytesIO(flac))
    except RuntimeError as exc:
        problems.append(f"{rel}: sample {key} duplex.flac does not decode ({exc})")
        return
    if info.channels != 2 or info.samplerate != 16000:
        problems.append(f"{rel}: sample {key} duplex.flac is {info.channels} channel(s) at {info.samplerate} Hz, "
                        f"expected 2 at 16000")
    length = info.frames / info.samplerate
    for seg in meta.get("segments") or []:
        try:
            inside = 0 <= seg["start"] < seg["end"] <= length + 1e-3 and seg["channel"] in (0, 1)
        except (TypeError, KeyError):  # a segment that is not {start, end, channel} numbers
            inside = False
        if not inside:
            problems.append(f"{rel}: sample {key} segment {seg} lies outside the {length:.2f}-s recording")
            break


def _shard_location(layout: Layout, shard: str) -> Path | str | None:
    """Where a manifest's shard path points, or None when that is outside the output."""
    if layout.local:
        root = Path(layout.root)
        tar_path = (root / shard).resolve()
        return tar_path if root.resolve() in tar_path.parents else None
    norm = posixpath.normpath(shard)
    return None if shard.startswith("/") or norm == "." or norm.startswith("..") else layout.store.location(norm)


def _check_shards(layout: Layout, part: Path | str, rows: list[dict], problems: list[str], duplex: bool = False
                  ) -> None:
    """Each tar a manifest part names: inside the output, present, and holding what the part says."""
    by_shard: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_shard[r["shard"]].append(r)
    for shard, shard_rows in by_shard.items():
        tar = _shard_location(layout, shard)
        if tar is None:
            problems.append(f"{layout.rel(part)}: shard path {shard!r} points outside the output")
        elif not _is_file(layout, tar):
            problems.append(f"{layout.rel(part)}: {'duplex ' if duplex else ''}shard {shard} is missing")
        else:
            _check_tar(layout, tar, shard_rows, problems, duplex=duplex)


def _stem(layout: Layout, location: Path | str) -> str:
    return PurePosixPath(layout.rel(location)).stem


def _check_duplex(layout: Layout, kept_ids: set[str], problems: list[str]) -> None:
    manifest_stems = {_stem(layout, p) for p in layout.manifest_parts()}
    duplex_stems = {_stem(layout, p) for p in layout.duplex_manifest_parts()}
    problems += [f"{layout.rel(t)}: no duplex manifest part (unfinished shard)" for t in layout.duplex_shards()
                 if _stem(layout, t) not in duplex_stems]
    problems += [f"{layout.rel(p)}: duplex part without the main manifest part of its shard"
                 for p in layout.duplex_manifest_parts() if _stem(layout, p) not in manifest_stems]
    seen: Counter = Counter()
    for part in layout.duplex_manifest_parts():
        rows = read_part(part, layout, problems)
        if rows is None:
            continue
        seen.update(r["conversation_id"] for r in rows)
        _check_shards(layout, part, rows, problems, duplex=True)
    problems += [f"duplex conversation {c} appears {n} times" for c, n in sorted(seen.items()) if n > 1]
    problems += [f"duplex conversation {c} is not a kept conversation" for c in sorted(set(seen) - kept_ids)]


def verify_output(root: Path | str | Layout) -> list[str]:
    """Every problem found in the output (an empty list: it is whole). Files that are not the pipeline's are
    not looked at; unfinished multipart uploads (S3) are problems too."""
    layout = root if isinstance(root, Layout) else Layout(root)
    store = layout.store
    problems: list[str] = []
    everything = store.list_files()
    if MARKER not in everything and not any(rel.startswith(("data/", "manifest/")) for rel in everything) and not (
            layout.local and (Path(layout.data).is_dir() or Path(layout.manifest).is_dir())):
        return [f"{store.url}: not a speechchat output folder (no data/ or manifest/)"]
    problems += [f"leftover temp file {rel}" for rel in everything if is_own_temp(rel)]  # never a user's draft.tmp
    problems += [f"{rel}: upload started and never completed (an interrupted writer)"
                 for rel, _ in store.unfinished_uploads()]
    manifest_stems = {_stem(layout, p) for p in layout.manifest_parts()}
    problems += [f"{layout.rel(t)}: no manifest part (unfinished shard)" for t in layout.shards()
                 if _stem(layout, t) not in manifest_stems]
    keys: Counter = Counter()
    kept_ids: set[str] = set()
    for part in layout.manifest_parts():
        rows = read_part(part, layout, problems, MANIFEST_COLUMNS)
        if rows is None:
            continue
        if not rows:
            problems.append(f"{layout.rel(part)}: empty manifest part")
            continue
        bad = [i for i, r in enumerate(rows) if not all(isinstance(r[c], str) and r[c] and "\0" not in r[c]
                                                        for c in ("key", "conversation_id", "shard"))]
        if bad:
            problems.append(f"{layout.rel(part)}: {len(bad)} row(s) without a key, conversation_id or "
                            f"shard (first: row {bad[0]})")
            rows = [r for i, r in enumerate(rows) if i not in set(bad)]
        keys.update(r["key"] for r in rows)
        kept_ids.update(r["conversation_id"] for r in rows)
        _check_shards(layout, part, rows, problems)
    problems += [f"key {k} appears {n} times" for k, n in sorted(keys.items()) if n > 1]
    rejected = Counter(str(r["conversation_id"]) for p in layout.reject_parts()
                       for r in read_part(p, layout, problems, ("conversation_id",)) or [])
    problems += [f"conversation {c} is rejected {n} times" for c, n in sorted(rejected.items()) if n > 1]
    problems += [f"conversation {c} is both kept and rejected" for c in sorted(kept_ids & set(rejected))]
    _check_duplex(layout, kept_ids, problems)
    return problems
