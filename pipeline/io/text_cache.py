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

from pipeline.io.layout import Layout, part_ids
from pipeline.schema import TEXT_CACHE_SCHEMA, rows_to_table


def text_dir(root: Path | str) -> Path | str:
    return Layout(root).store.location("text")


def write_part(root: Path | str | Layout, run_id: str, generated: list[dict[str, Any]]) -> Path | str:
    """Write one part holding these generated conversations (named after their IDs, so a retried batch
    rewrites the same part)."""
    layout = root if isinstance(root, Layout) else Layout(root)
    ids = "\n".join(sorted(r["conversation_id"] for r in generated))
    rel = f"text/part-{run_id}-{hashlib.sha256(ids.encode()).hexdigest()[:12]}.parquet"
    cached = [{**r, "turns": [{"role": t["role"], "display_text": t["display_text"]} for t in r["turns"]]}
              for r in generated]
    layout.write_parquet(rel, rows_to_table(cached, TEXT_CACHE_SCHEMA), fault_point="text_cache.mid_part")
    return layout.store.location(rel)


def cached_parts(root: Path | str | Layout) -> list[Path | str]:
    return (root if isinstance(root, Layout) else Layout(root)).text_parts()


def cached_ids(root: Path | str | Layout) -> np.ndarray:
    """64-bit hashes of every cached conversation (sorted), e.g. to tell what a text-only run produced."""
    layout = root if isinstance(root, Layout) else Layout(root)
    return part_ids(layout.text_parts(), layout.store)


def cached_rows(root: Path | str | Layout) -> int:
    """How many conversations the cache holds (from the Parquet footers; nothing is read)."""
    layout = root if isinstance(root, Layout) else Layout(root)
    return sum(layout.store.parquet_rows(p) for p in layout.text_parts())
