"""The text of the kept conversations, read back for the diversity report: a deterministic sample per language.

The sample is the conversations with the smallest ID hashes (IDs are content hashes, so this is a uniform,
reproducible sample that grows stably as the output grows). Its text comes from the shards: each exchange's
JSON member, found from the manifest's byte offset by hopping over tar headers (the audio members are skipped,
not read). A text-only output has no shards: its text comes from the text cache, less what was rejected.
Topic and scenario counts cover every kept conversation, not only the sample.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.ids import id_to_u64
from pipeline.io.layout import Layout
from pipeline.io.text_cache import cached_parts


@dataclass
class KeptText:
    """One language's sample: conversations as [(role, display text), ...], plus counts over all kept ones."""

    conversations: list[list[tuple[str, str]]] = field(default_factory=list)
    topics: Counter = field(default_factory=Counter)
    scenarios: Counter = field(default_factory=Counter)
    domains: Counter = field(default_factory=Counter)
    kept: int = 0


def _smallest_hashes(ids: list[str], n: int) -> set[str]:
    if len(ids) <= n:
        return set(ids)
    hashes = np.fromiter((id_to_u64(c) for c in ids), dtype=np.uint64, count=len(ids))
    return {ids[i] for i in np.argpartition(hashes, n - 1)[:n]}


def _open(path: Path | str, layout: Layout | None) -> Any:
    return layout.open(path) if layout is not None else open(path, "rb")


def read_json_member(path: Path | str, offset: int, key: str, layout: Layout | None = None) -> dict[str, Any] | None:
    """The `{key}.json` member of the sample whose first header starts at `offset`, or None. Plain ustar
    headers are hopped over (name and size from the header, data skipped by seeking; on object storage each
    seek is a ranged read)."""
    with _open(path, layout) as fh:
        fh.seek(offset)
        for _ in range(8):  # a sample has three members; a pax header would add one per member
            block = fh.read(tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE or not block.strip(b"\0"):
                return None
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME):
                return _json_by_stream(path, offset, key, layout)
            if not info.name.startswith(key + "."):
                return None
            if info.name == f"{key}.json":
                return json.loads(fh.read(info.size))
            fh.seek(info.size + (-info.size % tarfile.BLOCKSIZE), 1)
    return None


def _json_by_stream(path: Path | str, offset: int, key: str, layout: Layout | None = None) -> dict[str, Any] | None:
    with _open(path, layout) as fh:
        fh.seek(offset)
        with tarfile.open(fileobj=fh, mode="r|") as tf:
            for member in tf:
                if not member.name.startswith(key + "."):
                    return None
                if member.name == f"{key}.json":
                    return json.loads(tf.extractfile(member).read())
    return None


def _from_shards(layout: Layout, per_language: int) -> dict[str, KeptText]:
    columns = ["key", "conversation_id", "exchange_index", "language", "topic", "scenario", "domain", "shard", "offset"]
    tables = [layout.read_table(p, columns=columns) for p in layout.manifest_parts()]
    manifest = pa.concat_tables(tables, promote_options="default").to_pylist()
    out: dict[str, KeptText] = defaultdict(KeptText)
    exchanges: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in manifest:
        exchanges[row["conversation_id"]].append(row)
        if row["exchange_index"] == 0:
            text = out[row["language"]]
            text.kept += 1
            text.topics[row["topic"]] += 1
            text.scenarios[row["scenario"]] += 1
            text.domains[row["domain"] or ""] += 1
    by_language: dict[str, list[str]] = defaultdict(list)
    for conv_id, rows in exchanges.items():
        by_language[rows[0]["language"]].append(conv_id)
    for language, ids in by_language.items():
        for conv_id in sorted(_smallest_hashes(ids, per_language)):
            turns: list[tuple[str, str]] = []
            for row in sorted(exchanges[conv_id], key=lambda r: r["exchange_index"]):
                meta = read_json_member(layout.store.location(row["shard"]), int(row["offset"]), row["key"], layout)
                if meta is None:  # unreadable sample: the conversation is left out of the sample
                    turns = []
                    break
                turns += [("user", meta["user"]["display_text"]), ("assistant", meta["assistant"]["display_text"])]
            if turns:
                out[language].conversations.append(turns)
    return dict(out)


def _from_text_cache(layout: Layout, per_language: int) -> dict[str, KeptText]:
    rejected = layout.rejected_ids()
    rows: dict[str, dict[str, Any]] = {}
    for part in cached_parts(layout):
        for row in layout.read_table(part, columns=["conversation_id", "language", "topic", "scenario", "domain",
                                                "turns"]).to_pylist():
            u = np.uint64(id_to_u64(row["conversation_id"]))
            pos = int(np.searchsorted(rejected, u))
            if not (pos < len(rejected) and rejected[pos] == u):
                rows[row["conversation_id"]] = row
    out: dict[str, KeptText] = defaultdict(KeptText)
    by_language: dict[str, list[str]] = defaultdict(list)
    for conv_id, row in rows.items():
        text = out[row["language"]]
        text.kept += 1
        text.topics[row["topic"]] += 1
        text.scenarios[row["scenario"]] += 1
        text.domains[row["domain"] or ""] += 1
        by_language[row["language"]].append(conv_id)
    for language, ids in by_language.items():
        out[language].conversations = [[(t["role"], t["display_text"]) for t in rows[c]["turns"]]
                                       for c in sorted(_smallest_hashes(ids, per_language))]
    return dict(out)


def sample_kept_conversations(layout: Layout, per_language: int) -> dict[str, KeptText]:
    """{language: KeptText} of the output's kept conversations (see the module docstring)."""
    if layout.manifest_parts():
        return _from_shards(layout, per_language)
    return _from_text_cache(layout, per_language)
