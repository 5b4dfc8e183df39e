"""Write a config's whole plan (every conversation spec) to one Parquet file, in bounded memory.

`speechchat plan --config C --out specs.parquet` runs it. Specs are made block by block (the same
`PlanStage` the Ray plan uses, so IDs and picks are identical) and each block is appended to a
`pyarrow.parquet.ParquetWriter` as its own row group, so memory stays flat whether the plan has
a thousand or seven million conversations (Ke-SpeechChat's scale). The file appears atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import RunConfig
from pipeline.io.layout import atomic_write
from pipeline.schema import SPEC_COLUMNS, SPEC_SCHEMA
from pipeline.stages.base import RunContext
from pipeline.stages.plan import PlanStage


def make_plan_stage(cfg: RunConfig, done_ids: np.ndarray | None = None) -> PlanStage:
    ctx = RunContext(cfg=cfg, out_dir=cfg.output_location(), prompts_dir=cfg.resolve_path(cfg.plan.prompts_dir),
                     languages=list(cfg.plan.languages))
    if done_ids is not None:
        ctx.done_ids = done_ids
    return PlanStage.build(ctx)


def spec_block(plan: PlanStage, start: int, stop: int) -> pa.Table:
    """Specs for plan indices [start, stop) as a columnar table (no per-row dicts kept past the block)."""
    specs = [plan.spec(i) for i in range(start, stop)]
    return pa.table({name: pa.array([s[name] for s in specs], type=SPEC_SCHEMA.field(name).type)
                     for name in SPEC_COLUMNS}, schema=SPEC_SCHEMA)


def write_plan(cfg: RunConfig, out: Path, total: int | None = None, block_rows: int = 65_536,
               progress: Callable[[int], None] | None = None) -> dict:
    """Stream `total` specs (default: plan.num_conversations per language) to `out`. Returns counts and time."""
    plan = make_plan_stage(cfg)
    total = cfg.plan.num_conversations * len(cfg.plan.languages) if total is None else total
    if total < 0 or block_rows < 1:
        raise ValueError(f"write_plan: total={total} and block_rows={block_rows} must be >= 0 and >= 1")
    started = time.perf_counter()

    def write(fh) -> None:
        with pq.ParquetWriter(fh, SPEC_SCHEMA, compression="zstd") as writer:
            for start in range(0, total, block_rows):
                writer.write_table(spec_block(plan, start, min(total, start + block_rows)))
                if progress:
                    progress(min(total, start + block_rows))

    atomic_write(Path(out), write)
    return {"rows": total, "seconds": time.perf_counter() - started, "path": str(out),
            "bytes": Path(out).stat().st_size}
