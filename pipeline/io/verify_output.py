"""`speechchat verify-output DIR|URL`: check that a dataset folder (or object-store prefix) is whole and consistent.

Every tar opens; every sample has exactly json + user.flac + assistant.flac; the JSON names its own key;
the audio members are FLAC; checksums and byte offsets match the manifest; manifest and tars list the same
keys; no key or conversation appears twice, nor both kept and rejected; no temp files are left behind.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pipeline.io.layout import Layout
from pipeline.io.ownership import OWN_PATTERNS, is_own_temp, read_marker
from pipeline.schema import SAMPLE_PARTS


class _HashingReader:
    """A file wrapper that hashes what is read, so a tar is checked and checksummed in one pass (one download
    from object storage)."""

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


def _check_tar(layout: Layout, shard: str, rows: list[dict], problems: list[str]) -> None:
    rel = shard.rsplit("/", 1)[-1]
    members: dict[str, dict[str, bytes]] = defaultdict(dict)
    first_offset: dict[str, int] = {}
    broken = None
    with layout.open(shard) as raw:
        reader = _HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:
                for m in tf:
                    key, _, ext = m.name.partition(".")
                    first_offset.setdefault(key, m.offset)
                    fh = tf.extractfile(m)
                    members[key][ext] = fh.read() if fh else b""
        except (tarfile.TarError, OSError, EOFError) as exc:
            broken = exc
        digest = reader.finish()
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


def verify_output(root: Path | str | Layout) -> list[str]:
    """Every problem found in the output (an empty list: it is whole). Files that are not the pipeline's are
    not looked at; unfinished multipart uploads (S3) are problems too."""
    layout = root if isinstance(root, Layout) else Layout(root)
    store = layout.store
    problems: list[str] = []
    everything = store.list_files()
    if read_marker(store) is None and not any(rel.startswith(("data/", "manifest/")) for rel in everything):
        return [f"{store.url}: not a speechchat output folder (no data/ or manifest/)"]
    problems += [f"leftover temp file {rel}" for rel in everything if is_own_temp(rel)]
    problems += [f"{rel}: upload started and never completed (an interrupted writer)"
                 for rel, _ in store.unfinished_uploads()]
    parts = [rel for rel in everything if OWN_PATTERNS["manifest"].fullmatch(rel)]
    manifest_stems = {p.rsplit("/", 1)[-1].removesuffix(".parquet") for p in parts}
    problems += [f"{rel}: no manifest part (unfinished shard)" for rel in everything
                 if OWN_PATTERNS["shard"].fullmatch(rel) and rel.rsplit("/", 1)[-1].removesuffix(".tar")
                 not in manifest_stems]
    keys: Counter = Counter()
    kept_ids: set[str] = set()
    files = set(everything)
    for part in parts:
        rows = layout.read_table(part).to_pylist()
        if not rows:
            problems.append(f"{part}: empty manifest part")
            continue
        keys.update(r["key"] for r in rows)
        kept_ids.update(r["conversation_id"] for r in rows)
        by_shard: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_shard[r["shard"]].append(r)
        for shard, shard_rows in by_shard.items():
            if not OWN_PATTERNS["shard"].fullmatch(shard):
                problems.append(f"{part}: shard path {shard!r} points outside the output's data/")
            elif shard not in files:
                problems.append(f"{part}: shard {shard} is missing")
            else:
                _check_tar(layout, shard, shard_rows, problems)
    problems += [f"key {k} appears {n} times" for k, n in sorted(keys.items()) if n > 1]
    rejected = Counter(c for p in layout.reject_parts()
                       for c in layout.read_table(p, ["conversation_id"]).column(0).to_pylist())
    problems += [f"conversation {c} is rejected {n} times" for c, n in sorted(rejected.items()) if n > 1]
    problems += [f"conversation {c} is both kept and rejected" for c in sorted(kept_ids & set(rejected))]
    return problems
