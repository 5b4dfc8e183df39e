"""The near-duplicate index's memory across runs: state/near_dup/<shard name>.parquet.

The shard stage writes the MinHash signature of every conversation it keeps (or, in a text-only run, every one
it passes on as generated) beside the shard, before the shard's tar and manifest, so that no kept conversation
is ever missing from the next run's index. The near-duplicate stage preloads them, minus the conversations the
output rejected since (a conversation whose signature was written by a run that then crashed before its
manifest comes through again and meets its own signature, which is not a duplicate).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from pipeline.ids import id_to_u64
from pipeline.io.layout import Layout
from pipeline.schema import SIGNATURE_SCHEMA, rows_to_table

log = logging.getLogger(__name__)


def signature_dir(layout: Layout) -> Path | str:
    return layout.store.location("state/near_dup")


def signature_parts(layout: Layout) -> list[Path | str]:
    return layout.own("near_dup")


def write_signatures(layout: Layout, name: str, rows: list[dict[str, Any]], settings: str) -> Path | str | None:
    """One part for these rows' signatures (rows without one, e.g. with near-duplicate checks off, are left out);
    named like the shard, so a retried batch rewrites the same part."""
    signed = [{"conversation_id": r["conversation_id"], "settings": settings, "signature": r["near_dup_signature"]}
              for r in rows if r.get("near_dup_signature")]
    if not signed:
        return None
    rel = f"state/near_dup/{name}.parquet"
    layout.write_parquet(rel, rows_to_table(signed, SIGNATURE_SCHEMA))
    return layout.store.location(rel)


def read_signatures(layout: Layout, settings: str, exclude: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    """(IDs, signatures as an (n, num_perm) uint32 array) of every stored signature made with `settings`, in the
    order the runs wrote them (part names start with the run ID, a UTC timestamp), minus `exclude` (sorted
    64-bit ID hashes: the rejected conversations)."""
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    other = 0
    for part in signature_parts(layout):
        table = layout.read_table(part)
        same = pc.equal(table.column("settings"), settings)
        other += table.num_rows - pc.sum(same).as_py() if table.num_rows else 0
        table = table.filter(same)
        if not table.num_rows:
            continue
        part_ids = table.column("conversation_id").to_pylist()
        sigs = np.array(table.column("signature").to_pylist(), dtype=np.uint32)
        if exclude is not None and len(exclude):
            keep = ~np.isin(np.fromiter((id_to_u64(c) for c in part_ids), dtype=np.uint64, count=len(part_ids)),
                            exclude)
            part_ids, sigs = [c for c, k in zip(part_ids, keep) if k], sigs[keep]
        ids += part_ids
        blocks.append(sigs)
    if other:
        log.warning("near_dup: %d stored signatures were made with other dedup settings than %s and cannot be "
                    "compared; those conversations are not in the index", other, settings)
    width = blocks[0].shape[1] if blocks else 0
    return ids, np.concatenate(blocks) if blocks else np.empty((0, width), dtype=np.uint32)
