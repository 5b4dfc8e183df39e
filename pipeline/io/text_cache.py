"""The text cache: generated conversations kept as Parquet so audio can be remade without the LLM.

out/<dataset>/text/part-<run>-<hash>.parquet holds each generated (not rejected) conversation's spec and
turns (role + display text), in `schema.TEXT_CACHE_SCHEMA`. Written right after generation, before anything
can reject the conversation for audio reasons (`stages/text_cache.py`); read back by
`run --stages tts,verify,shard` and by a resumed run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.io.layout import Layout, part_ids, write_parquet_atomic
from pipeline.schema import TEXT_CACHE_SCHEMA, rows_to_table


def text_dir(root: Path) -> Path:
    return Path(root) / "text"


def write_part(root: Path, run_id: str, generated: list[dict[str, Any]]) -> Path:
    """Write one part holding these generated conversations (named after their IDs, so a retried batch
    rewrites the same part)."""
    ids = "\n".join(sorted(r["conversation_id"] for r in generated))
    path = text_dir(root) / f"part-{run_id}-{hashlib.sha256(ids.encode()).hexdigest()[:12]}.parquet"
    cached = [{**r, "turns": [{"role": t["role"], "display_text": t["display_text"]} for t in r["turns"]]}
              for r in generated]
    write_parquet_atomic(path, rows_to_table(cached, TEXT_CACHE_SCHEMA), fault_point="text_cache.mid_part")
    return path


def cached_parts(root: Path) -> list[Path]:
    d = text_dir(root)
    return Layout(root).own("text", d.glob("*.parquet")) if d.is_dir() else []


def cached_ids(root: Path) -> np.ndarray:
    """64-bit hashes of every cached conversation (sorted), e.g. to tell what a text-only run produced."""
    return part_ids(cached_parts(root))


def cached_rows(root: Path) -> int:
    """How many conversations the cache holds (from the Parquet footers; nothing is read)."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in cached_parts(root))
