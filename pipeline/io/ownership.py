"""Which files of an output are the pipeline's: the marker, the names it writes, and what a restart may remove.

A run writes a marker at the root of a new output (`.speechchat-output.json`: dataset name, layout version).
A non-empty folder or prefix without the marker is refused (`claim_output` raises `OutputNotOwned`, naming the
folder and what is in it) unless the user adopts it explicitly (`--adopt-output`). Inside a marked output,
restart cleanup (`clean_unfinished`) removes only files whose names match the pipeline's own patterns
(`layout.OWN_PATTERNS`, the one list of them: shard, manifest, duplex, rejects, text, near-dup and state
names, its root files, their `.tmp` names) and
lists each one; anything else (a user's `notes/draft.tmp`, `data/en/train/holiday-photos.tar`,
`manifest/notes.parquet`) is never removed, overwritten or read as data: every reader lists parts through
`own_files`.

The functions, for the callers and the tests that build on these rules:
  is_own_name(rel)                 a name the pipeline writes (a pattern of OWN_PATTERNS)
  is_own_temp(rel)                 `<own name>.tmp`: a write the pipeline started
  own_files(store, kind)           the finished own files of one kind (shards, manifest, rejects, text), sorted
  read_marker(store)               the marker's content, or None
  ownership_problem(store, dataset, adopt)   why a run may not write here (None: it may)
  claim_output(store, dataset, adopt)        check, then write the marker if it is missing
  clean_unfinished(store)          remove the pipeline's unfinished files and uploads, return what was removed
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import PurePosixPath
from typing import Any

from pipeline.config import ConfigError
from pipeline.io.layout import KIND_DIRS, MARKER, Layout, is_own_name, is_own_temp
from pipeline.io.storage import Store

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1


class OutputNotOwned(ConfigError):
    """The output folder or prefix is not the pipeline's (or another dataset's); the message says how to go on."""


def own_files(store: Store, kind: str) -> list[str]:
    """The finished files of one kind (`shard`, `manifest`, `rejects`, `text`, ...) that the pipeline wrote."""
    return [rel for rel in store.list_files(KIND_DIRS[kind]) if is_own_name(rel, kind)]


def stem(rel: str) -> str:
    return PurePosixPath(rel).stem


def read_marker(store: Store) -> dict[str, Any] | None:
    if not store.is_file(MARKER):
        return None
    try:
        marker = json.loads(store.read_text(MARKER))
    except (ValueError, UnicodeDecodeError):
        return {}
    return marker if isinstance(marker, dict) else {}


def ownership_problem(store: Store, dataset: str, adopt: bool = False) -> str | None:
    """Why a run of `dataset` may not write into `store` (None: it may). An empty or missing folder is fine; a
    marked one of the same dataset too; anything else needs `adopt`."""
    marker = read_marker(store)
    if marker is not None:
        if marker.get("dataset") in (None, dataset) or adopt:
            if marker.get("layout_version", LAYOUT_VERSION) > LAYOUT_VERSION:
                return (f"{store.url} was written by a newer speechchat (output layout version "
                        f"{marker['layout_version']}, this one writes {LAYOUT_VERSION}); upgrade, or use another --out")
            return None
        return (f"{store.url} holds the dataset {marker.get('dataset')!r} ({MARKER}), not {dataset!r}: use another "
                f"--out, or pass --adopt-output to add {dataset!r} to it")
    if adopt:
        return None
    files = [rel for rel in store.list_files() if not is_own_temp(rel)]
    if not files:
        return None
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    return (f"{store.url} is not empty and is not a speechchat output (no {MARKER}): it holds {shown}. The "
            f"pipeline only writes into a new or empty folder, or one it made: use another --out, or pass "
            f"--adopt-output to make this one a speechchat output (its files are kept; only files named as the "
            f"pipeline names its own are ever replaced or cleaned up)")


def claim_output(store: Store, dataset: str, adopt: bool = False) -> dict[str, Any]:
    """Check `ownership_problem` (raises OutputNotOwned) and write the marker if it is missing; return it."""
    problem = ownership_problem(store, dataset, adopt)
    if problem:
        raise OutputNotOwned(problem)
    marker = read_marker(store)
    if marker and marker.get("dataset") == dataset:
        return marker
    if marker is not None and adopt:  # another dataset's output, adopted: both names are kept
        marker = {**marker, "datasets": sorted({*marker.get("datasets", [marker.get("dataset")]), dataset})}
    else:
        existing = [rel for rel in store.list_files() if not is_own_temp(rel)] if adopt else []
        if existing:
            log.warning("adopting %s, which holds %d file(s) of its own; they are kept", store.url, len(existing))
        marker = {"dataset": dataset, "layout_version": LAYOUT_VERSION, "writer": "speechchat",
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "adopted": bool(existing)}
    store.write_bytes(MARKER, (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode())
    return marker


def clean_unfinished(store: Store) -> list[str]:
    """Remove what an interrupted run of this pipeline left unfinished (`Layout.clean_unfinished`: own names
    only), inside a marked output only; return the names removed."""
    if read_marker(store) is None:
        return []
    return [store.rel(p) for p in Layout(store).clean_unfinished()]
