"""`speechchat verify-output DIR`: check that a dataset folder is whole and consistent.

Every tar opens; every sample has exactly json + user.flac + assistant.flac (+ user_clean.flac when augmented
with augment.keep_clean); the JSON names its own key; the audio members are FLAC; checksums and byte offsets match
the manifest; manifest and tars list the same keys; no key or conversation appears twice, nor both kept and
rejected; no temp files are left behind. The duplex subset (data/<lang>/duplex/, manifest/duplex/) is held to the
same rules, plus: each sample is json + duplex.flac (stereo 16 kHz FLAC), its JSON names its conversation and its
segments lie inside the recording, and every duplex conversation is a kept one.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import soundfile as sf

from pipeline.io.layout import TMP_SUFFIX, Layout, file_sha256
from pipeline.schema import DUPLEX_PARTS, OPTIONAL_AUDIO_FILES, SAMPLE_PARTS


def _check_tar(tar_path: Path, rows: list[dict], problems: list[str], duplex: bool = False) -> None:
    rel = tar_path.name
    if file_sha256(tar_path) != rows[0]["shard_sha256"]:
        problems.append(f"{rel}: sha256 differs from the manifest")
    members: dict[str, dict[str, bytes]] = defaultdict(dict)
    first_offset: dict[str, int] = {}
    try:
        with tarfile.open(tar_path, "r:") as tf:  # shards are plain tars: one reason, not one per compression
            for m in tf:
                key, _, ext = m.name.partition(".")
                first_offset.setdefault(key, m.offset)
                fh = tf.extractfile(m)
                members[key][ext] = fh.read() if fh else b""
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
        expected = DUPLEX_PARTS if duplex else SAMPLE_PARTS
        if set(parts) != expected and (duplex or set(parts) != SAMPLE_PARTS | set(OPTIONAL_AUDIO_FILES)):
            problems.append(f"{rel}: sample {key} has parts {sorted(parts)}, expected {sorted(expected)}")
            continue
        try:
            meta = json.loads(parts["json"])
            named = meta.get("conversation_id") if duplex else meta.get("key")
            if named != key:
                problems.append(f"{rel}: sample {key} JSON names {'conversation' if duplex else 'key'} {named!r}")
            if duplex:
                _check_timeline(rel, key, meta, parts["duplex.flac"], problems)
        except json.JSONDecodeError:
            problems.append(f"{rel}: sample {key} JSON does not parse")
        for side in sorted(p for p in parts if p.endswith(".flac")):
            if not parts[side].startswith(b"fLaC"):
                problems.append(f"{rel}: sample {key} {side} is not FLAC")
        if first_offset.get(key) != row["offset"]:
            problems.append(f"{rel}: sample {key} offset {row['offset']} in the manifest, {first_offset.get(key)} in the tar")


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
        if not (0 <= seg["start"] < seg["end"] <= length + 1e-3) or seg["channel"] not in (0, 1):
            problems.append(f"{rel}: sample {key} segment {seg} lies outside the {length:.2f}-s recording")
            break


def _check_duplex(root: Path, layout: Layout, kept_ids: set[str], problems: list[str]) -> None:
    manifest_stems = {p.stem for p in layout.manifest_parts()}
    duplex_stems = {p.stem for p in layout.duplex_manifest_parts()}
    problems += [f"{t.relative_to(root)}: no duplex manifest part (unfinished shard)" for t in layout.duplex_shards()
                 if t.stem not in duplex_stems]
    problems += [f"{p.relative_to(root)}: duplex part without the main manifest part of its shard"
                 for p in layout.duplex_manifest_parts() if p.stem not in manifest_stems]
    seen: Counter = Counter()
    for part in layout.duplex_manifest_parts():
        rows = pq.read_table(part).to_pylist()
        seen.update(r["conversation_id"] for r in rows)
        by_shard: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_shard[r["shard"]].append(r)
        for shard, shard_rows in by_shard.items():
            tar_path = (root / shard).resolve()
            if root.resolve() not in tar_path.parents:
                problems.append(f"{part.relative_to(root)}: shard path {shard!r} points outside the output")
            elif not tar_path.is_file():
                problems.append(f"{part.relative_to(root)}: duplex shard {shard} is missing")
            else:
                _check_tar(tar_path, shard_rows, problems, duplex=True)
    problems += [f"duplex conversation {c} appears {n} times" for c, n in sorted(seen.items()) if n > 1]
    problems += [f"duplex conversation {c} is not a kept conversation" for c in sorted(set(seen) - kept_ids)]


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
        rows = pq.read_table(part).to_pylist()
        if not rows:
            problems.append(f"{part.relative_to(root)}: empty manifest part")
            continue
        keys.update(r["key"] for r in rows)
        kept_ids.update(r["conversation_id"] for r in rows)
        by_shard: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_shard[r["shard"]].append(r)
        for shard, shard_rows in by_shard.items():
            tar_path = (root / shard).resolve()
            if root.resolve() not in tar_path.parents:
                problems.append(f"{part.relative_to(root)}: shard path {shard!r} points outside the output")
            elif not tar_path.is_file():
                problems.append(f"{part.relative_to(root)}: shard {shard} is missing")
            else:
                _check_tar(tar_path, shard_rows, problems)
    problems += [f"key {k} appears {n} times" for k, n in sorted(keys.items()) if n > 1]
    rejected = Counter(c for p in layout.reject_parts()
                       for c in pq.read_table(p, columns=["conversation_id"]).column(0).to_pylist())
    problems += [f"conversation {c} is rejected {n} times" for c, n in sorted(rejected.items()) if n > 1]
    problems += [f"conversation {c} is both kept and rejected" for c in sorted(kept_ids & set(rejected))]
    _check_duplex(root, layout, kept_ids, problems)
    return problems
