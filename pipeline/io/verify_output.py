"""`speechchat verify-output DIR`: check that a dataset folder is whole and consistent.

Every tar opens; every sample has exactly json + user.flac + assistant.flac; the JSON names its own key;
the audio members are FLAC; checksums and byte offsets match the manifest; manifest and tars list the same
keys; no key or conversation appears twice, nor both kept and rejected; no temp files are left behind.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.io.layout import TMP_SUFFIX, Layout, file_sha256
from pipeline.schema import SAMPLE_PARTS


def _check_tar(tar_path: Path, rows: list[dict], problems: list[str]) -> None:
    rel = tar_path.name
    if file_sha256(tar_path) != rows[0]["shard_sha256"]:
        problems.append(f"{rel}: sha256 differs from the manifest")
    members: dict[str, dict[str, bytes]] = defaultdict(dict)
    first_offset: dict[str, int] = {}
    try:
        with tarfile.open(tar_path) as tf:
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
        if set(parts) != SAMPLE_PARTS:
            problems.append(f"{rel}: sample {key} has parts {sorted(parts)}, expected {sorted(SAMPLE_PARTS)}")
            continue
        try:
            meta = json.loads(parts["json"])
            if meta.get("key") != key:
                problems.append(f"{rel}: sample {key} JSON names key {meta.get('key')!r}")
        except json.JSONDecodeError:
            problems.append(f"{rel}: sample {key} JSON does not parse")
        for side in ("user.flac", "assistant.flac"):
            if not parts[side].startswith(b"fLaC"):
                problems.append(f"{rel}: sample {key} {side} is not FLAC")
        if first_offset.get(key) != row["offset"]:
            problems.append(f"{rel}: sample {key} offset {row['offset']} in the manifest, {first_offset.get(key)} in the tar")


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
    return problems
