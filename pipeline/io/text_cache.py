"""The text cache: generated conversations kept as Parquet so audio can be remade without the LLM.

out/<dataset>/text/part-<run>-<hash>.parquet holds each generated (not rejected) conversation's spec and
turns (role + display text). Written as a side output right after generation, before anything can
reject the conversation for audio reasons; read back by `run --stages tts,verify,shard`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.layout import write_parquet_atomic
from pipeline.records import is_rejected, rows_to_table, table_to_rows

TEXT_TURN_TYPE = pa.struct([("role", pa.string()), ("display_text", pa.string())])
TEXT_CACHE_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("plan_index", pa.int64()), ("dataset", pa.string()),
    ("language", pa.string()), ("domain", pa.string()), ("topic", pa.string()), ("scenario", pa.string()), ("persona", pa.string()),
    ("num_exchanges", pa.int32()), ("seed", pa.int64()), ("text_digest", pa.string()), ("llm_model", pa.string()),
    ("llm_requests", pa.int32()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("turns", pa.list_(TEXT_TURN_TYPE)),
])


def text_dir(root: Path) -> Path:
    return Path(root) / "text"


class TextCacheWriter:
    """Pass-through stage: writes the batch's generated conversations to the cache, returns the batch as is."""

    name = "text_cache"

    def __init__(self, out_dir: Path, run_id: str):
        self.dir, self.run_id = text_dir(out_dir), run_id

    def __call__(self, batch: pa.Table | dict) -> pa.Table:
        rows = table_to_rows(batch)
        generated = [r for r in rows if not is_rejected(r)]
        if generated:
            ids = "\n".join(sorted(r["conversation_id"] for r in generated))
            name = f"part-{self.run_id}-{hashlib.sha256(ids.encode()).hexdigest()[:12]}.parquet"
            cached = [{**r, "turns": [{"role": t["role"], "display_text": t["display_text"]} for t in r["turns"]]}
                      for r in generated]
            write_parquet_atomic(self.dir / name, rows_to_table(cached, TEXT_CACHE_SCHEMA), fault_point="text_cache.mid_part")
        return batch if isinstance(batch, pa.Table) else rows_to_table(rows)


def cached_parts(root: Path) -> list[Path]:
    d = text_dir(root)
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


def cached_ids(root: Path) -> np.ndarray:
    """64-bit hashes of every cached conversation (sorted), e.g. to tell what a text-only run produced."""
    from pipeline.stages.plan import id_to_u64

    ids = [id_to_u64(c) for p in cached_parts(root) for c in pq.read_table(p, columns=["conversation_id"]).column(0).to_pylist()]
    return np.unique(np.array(ids, dtype=np.uint64))


class CachedTextFilter:
    """Turns cached conversations back into pipeline rows: drops finished IDs, recomputes the split."""

    def __init__(self, done_ids: np.ndarray, splits: dict[str, float], text_digest: str | None = None):
        # text_digest: keep only conversations generated under these text-side settings (None: all)
        self.done_ids, self.splits, self.text_digest = done_ids, splits, text_digest

    def __call__(self, batch: pa.Table | dict) -> pa.Table:
        from pipeline.records import empty_turn
        from pipeline.stages.plan import is_done, split_for

        out: list[dict[str, Any]] = []
        for row in table_to_rows(batch):
            if is_done(self.done_ids, row["conversation_id"]):
                continue
            if self.text_digest is not None and row["text_digest"] != self.text_digest:
                continue
            row["split"] = split_for(row["conversation_id"], self.splits)
            row.update(llm_requests=0, prompt_tokens=0, completion_tokens=0)  # paid for by the run that cached it
            row["turns"] = [empty_turn(t["role"], t["display_text"]) for t in row["turns"]]
            out.append(row)
        return rows_to_table(out)
