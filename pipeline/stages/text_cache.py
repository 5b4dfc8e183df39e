"""The text cache as two stages: the writer keeps every generated conversation right after the LLM (so audio
can be remade, and a killed run resumes, without paying for the LLM again); the reader starts a stream from
the cache (`--stages tts,verify,shard`, or the unfinished conversations of an interrupted run)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ids import is_done, split_for
from pipeline.io.text_cache import cached_parts, write_part
from pipeline.schema import empty_turn, is_rejected, rows_to_table, table_to_rows
from pipeline.stages.base import ReadStage, ReadTask, RunContext, Stage


class TextCacheWriteStage(Stage):
    """Pass-through: writes the batch's generated conversations to the cache, returns the batch as is."""

    name = "text_cache"

    def __init__(self, out_dir: Path, run_id: str):
        super().__init__()
        self.out_dir, self.run_id = Path(out_dir), run_id

    @classmethod
    def build(cls, ctx: RunContext) -> TextCacheWriteStage:
        return cls(ctx.out_dir, ctx.run_id)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        generated = [r for r in table_to_rows(batch) if not is_rejected(r)]
        if generated:
            write_part(self.out_dir, self.run_id, generated)
        return batch


class TextCacheReadStage(ReadStage):
    """Reads cached conversations back as pipeline rows: drops finished IDs, recomputes the split."""

    name = "text_cache_read"

    def __init__(self, parts: list[Path], done_ids: np.ndarray, splits: dict[str, float],
                 text_digest: str | None = None):
        super().__init__()
        # text_digest: keep only conversations generated under these text-side settings (None: all)
        self.parts, self.done_ids, self.splits, self.text_digest = [str(p) for p in parts], done_ids, splits, text_digest

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        source = (ctx.text_from or ctx.out_dir).resolve()
        if not cached_parts(source):
            return [f"no cached text in {source}/text: run the generate stage first "
                    "(or point --text-from at an output that has it)"]
        return []

    @classmethod
    def build(cls, ctx: RunContext, resuming: bool = False) -> TextCacheReadStage:
        """The cache of `--text-from` (any settings), or when `resuming`, this output's own cache under this
        config's text-side settings (conversations an interrupted run generated but did not speak)."""
        source = ctx.out_dir if resuming else (ctx.text_from or ctx.out_dir)
        return cls(cached_parts(source), ctx.done_ids, dict(ctx.cfg.shard.splits),
                   ctx.cfg.text_digest() if resuming else None)

    def read_tasks(self, parallelism: int) -> list[ReadTask]:
        """One read task per part file (`ray.data.read_parquet` would first run a listing task that asks for a
        whole CPU: on a small machine whose CPUs the model actors hold, that task never gets scheduled)."""
        return [ReadTask(_read_part(path), num_rows=pq.ParquetFile(path).metadata.num_rows, input_files=(path,))
                for path in self.parts]

    def process_batch(self, batch: pa.Table) -> pa.Table:
        out = []
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


def _read_part(path: str):
    def read() -> Iterator[pa.Table]:
        yield pq.read_table(path)
    return read
