"""The text cache as two stages: the writer keeps every generated conversation right after the LLM (so audio
can be remade, and a killed run resumes, without paying for the LLM again); the reader starts a stream from
the cache (`--stages tts,verify,shard`, or the unfinished conversations of an interrupted run)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.ids import is_done, split_for
from pipeline.io.layout import Layout
from pipeline.io.text_cache import cached_parts, write_part
from pipeline.schema import empty_turn, is_rejected, rows_to_table, table_to_rows
from pipeline.stages.base import ReadStage, ReadTask, RunContext, Stage


class TextCacheWriteStage(Stage):
    """Pass-through: writes the batch's generated conversations to the cache, returns the batch as is."""

    name = "text_cache"

    def __init__(self, out_dir: Path | str | Layout, run_id: str):
        super().__init__()
        self.layout = out_dir if isinstance(out_dir, Layout) else Layout(out_dir)
        self.run_id = run_id

    @classmethod
    def build(cls, ctx: RunContext) -> TextCacheWriteStage:
        return cls(ctx.layout(), ctx.run_id)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        generated = [r for r in table_to_rows(batch) if not is_rejected(r)]
        if generated:
            write_part(self.layout, self.run_id, generated)
        return batch


class TextCacheReadStage(ReadStage):
    """Reads cached conversations back as pipeline rows: drops finished IDs, recomputes the split."""

    name = "text_cache_read"

    def __init__(self, parts: list[Path | str], done_ids: np.ndarray, splits: dict[str, float],
                 text_digest: str | None = None, layout: Layout | None = None):
        super().__init__()
        # text_digest: keep only conversations generated under these text-side settings (None: all)
        self.parts, self.done_ids, self.splits, self.text_digest = list(parts), done_ids, splits, text_digest
        self.layout = layout  # where the parts are (None: local paths)

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        source = ctx.layout(ctx.text_from)
        if not cached_parts(source):
            return [f"no cached text in {source.store.url}/text: run the generate stage first "
                    "(or point --text-from at an output that has it)"]
        return []

    @classmethod
    def build(cls, ctx: RunContext, resuming: bool = False) -> TextCacheReadStage:
        """The cache of `--text-from` (any settings), or when `resuming`, this output's own cache under this
        config's text-side settings (conversations an interrupted run generated but did not speak)."""
        source = ctx.layout(None if resuming else ctx.text_from)
        return cls(cached_parts(source), ctx.done_ids, dict(ctx.cfg.shard.splits),
                   ctx.cfg.text_digest() if resuming else None, layout=source)

    def read_tasks(self, parallelism: int) -> list[ReadTask]:
        """One read task per part file (`ray.data.read_parquet` would first run a listing task that asks for a
        whole CPU: on a small machine whose CPUs the model actors hold, that task never gets scheduled).
        The parts are read wherever the task runs (another node reads them from the object store)."""
        layout = self.layout or Layout(Path("/"))
        return [ReadTask(_read_part(layout, path), num_rows=layout.store.parquet_rows(path),
                         input_files=(str(path),))
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


def _read_part(layout: Layout, path: Path | str):
    def read() -> Iterator[pa.Table]:
        yield layout.read_table(path)
    return read
