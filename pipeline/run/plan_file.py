"""Write a config's whole plan (every conversation spec) to one Parquet file, in bounded memory.

`speechchat plan --config C --out specs.parquet` runs it. Specs are made block by block (the same
`PlanStage` the Ray plan uses, so IDs and picks are identical) and each block is appended to a
`pyarrow.parquet.ParquetWriter` as its own row group, so memory stays flat whether the plan has
a thousand or seven million conversations (Ke-SpeechChat's scale). The file appears atomically.

The first block is small and timed: from it the whole file's size and time are estimated and reported, and a
plan that would not fit on the disk stops there (its temp file removed). Progress is reported every few
seconds. The temp file goes on any exit: an error, Ctrl-C, or SIGTERM (turned into SystemExit while planning).
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ConfigError, RunConfig
from pipeline.io.layout import atomic_write, file_target_problem
from pipeline.schema import SPEC_COLUMNS, SPEC_SCHEMA
from pipeline.stages.base import RunContext
from pipeline.stages.plan import PlanStage


def make_plan_stage(cfg: RunConfig, done_ids: np.ndarray | None = None) -> PlanStage:
    """The plan stage of `cfg`; ConfigError listing what its check finds (a missing or broken taxonomy)."""
    ctx = RunContext(cfg=cfg, out_dir=cfg.output_location(), prompts_dir=cfg.resolve_path(cfg.plan.prompts_dir),
                     languages=list(cfg.plan.languages))
    problems = PlanStage.check(ctx)
    if problems:
        raise ConfigError("cannot plan:\n  " + "\n  ".join(problems))
    if done_ids is not None:
        ctx.done_ids = done_ids
    return PlanStage.build(ctx)


def spec_block(plan: PlanStage, start: int, stop: int) -> pa.Table:
    """Specs for plan indices [start, stop) as a columnar table (no per-row dicts kept past the block)."""
    specs = [plan.spec(i) for i in range(start, stop)]
    return pa.table({name: pa.array([s[name] for s in specs], type=SPEC_SCHEMA.field(name).type)
                     for name in SPEC_COLUMNS}, schema=SPEC_SCHEMA)


FIRST_BLOCK = 4096     # specs timed for the estimate (about a second)
PROGRESS_EVERY_S = 10.0


def _size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes / 1e3:.1f} KB"


def _duration(seconds: float) -> str:
    for unit, scale in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.0f} s"


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While planning, SIGTERM raises SystemExit(143) (like Ctrl-C raises KeyboardInterrupt), so the temp file
    is removed on the way out instead of being left by a kill."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_plan(cfg: RunConfig, out: Path, total: int | None = None, block_rows: int = 65_536,
               progress: Callable[[int], None] | None = None, report: Callable[[str], None] | None = None) -> dict:
    """Stream `total` specs (default: plan.num_conversations per language) to `out`. Returns counts and time.
    `report` gets the estimate (size, time) after the first block and a progress line every PROGRESS_EVERY_S.
    Raises ConfigError for an output that is not a file path, or a plan larger than the disk's free space."""
    out = Path(out)
    problem = file_target_problem(out)
    if problem:
        raise ConfigError(f"plan --out {out}: {problem}")
    plan = make_plan_stage(cfg)
    total = cfg.plan.num_conversations * len(cfg.plan.languages) if total is None else total
    if total < 0 or block_rows < 1:
        raise ValueError(f"write_plan: total={total} and block_rows={block_rows} must be >= 0 and >= 1")
    started = time.perf_counter()

    def write(fh) -> None:
        with pq.ParquetWriter(fh, SPEC_SCHEMA, compression="zstd") as writer:
            first = min(total, FIRST_BLOCK, block_rows)
            bounds = [(0, first)] + [(lo, min(total, lo + block_rows)) for lo in range(first, total, block_rows)]
            last_report = time.perf_counter()
            for start, stop in bounds:
                if start == stop:
                    continue
                writer.write_table(spec_block(plan, start, stop))
                if progress:
                    progress(stop)
                now = time.perf_counter()
                if start == 0 and stop < total:
                    _estimate(fh.tell() / stop * total, (now - started) / stop * total, total, out, report)
                elif report and now - last_report >= PROGRESS_EVERY_S:
                    rate = stop / (now - started)
                    report(f"planned {stop:,} / {total:,} ({100 * stop / total:.1f}%), {_size(fh.tell())}, "
                           f"about {_duration((total - stop) / rate)} left")
                    last_report = now

    with sigterm_as_exit():
        atomic_write(out, write)
    return {"rows": total, "seconds": time.perf_counter() - started, "path": str(out),
            "bytes": out.stat().st_size}


def _estimate(size: float, seconds: float, total: int, out: Path, report: Callable[[str], None] | None) -> None:
    """Report the estimate; stop (ConfigError, the temp file is removed) when the plan cannot fit on the disk."""
    free = shutil.disk_usage(out.absolute().parent).free
    line = (f"planning {total:,} conversation specs -> {out}: about {_size(size)} and {_duration(seconds)} "
            f"(estimated from the first {min(total, FIRST_BLOCK):,}; {_size(free)} free there)")
    if size > free:
        raise ConfigError(f"{line}: the plan does not fit on the disk; lower plan.num_conversations or choose "
                          "another --out")
    if report:
        report(line)
