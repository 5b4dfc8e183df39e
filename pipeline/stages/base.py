"""The stage contract: every step of the flow declares what it needs and does one job.

A stage has a `name`, the `resources` it asks for (CPUs, GPUs, model threads, how many actors), a
`batch_size` (conversations per call; None: whatever arrives), `setup()` (models, once per worker),
`process_batch()` (a pure function of an Arrow table of `schema.CONVERSATION_SCHEMA`), and two classmethods:
`check(ctx)` returns the problems a run would hit (missing files, bad settings) before Ray starts - the
preflight is these gathered - and `build(ctx)` makes the stage from the config. How a stage runs (Ray Data
tasks or an actor pool, crash bounds, GPU shares) is the executor's decision (`pipeline/executor/`); a stage
never imports ray, so it runs the same in a unit test, a local Ray and a cluster.

Row-wise stages subclass `RowStage` and raise `reasons.Rejected` to drop one conversation with a reason;
a stage never writes files or counts things itself (the shard stage and `pipeline/io` do).
A `ReadStage` starts a stream (plan indices, source records, the text cache): the executor turns its
`read_tasks()` into a Ray datasource and then maps its `process_batch` over what was read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

from pipeline.faults import checkpoint, inject
from pipeline.io.layout import Layout
from pipeline.reasons import Rejected
from pipeline.schema import BUSY_COLUMNS, is_rejected, reject, rows_to_table, table_to_rows

if TYPE_CHECKING:
    from pipeline.config import RunConfig
    from pipeline.voices.pool import Speaker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage asks for.

    actors: None runs the stage as stateless Ray tasks; N runs an actor pool that grows from 1 to N actors;
    "auto" as many actors as the cluster's CPUs (or GPU shares) fit, all started at once. A stage that holds
    state for the whole run (the quota, the shard writer) asks for exactly one (`single=True`).
    """

    num_cpus: float = 0.05
    num_gpus: float = 0.0
    threads: int | None = None  # CPU threads of the worker's models (pipeline.threads); None: the library default
    actors: int | Literal["auto"] | None = None
    single: bool = False
    custom: dict[str, float] = field(default_factory=dict)  # custom Ray resources (nodes started with --resources)
    # the stage talks to a server on the driver's loopback (the embedded llama.cpp server): it must run on the
    # driver's node, since 127.0.0.1 on another node is that node
    driver_node: bool = False


@dataclass
class RunContext:
    """What the stages of one run share: the config, the files found before Ray starts, and the run's state.

    `check()`s fill the found-files part (the preflight), the runner fills the rest before `build()`s."""

    cfg: RunConfig
    out_dir: Path | str  # a local folder, or an object-store URL (s3://bucket/prefix)
    prompts_dir: Path
    languages: list[str]
    gguf: Path | None = None         # the embedded LLM server's model
    piper_voice: Path | None = None
    tts_model: Path | None = None    # Coqui checkpoint folder (vits/xtts)
    asr_model: Path | None = None    # None: the packaged tiny.en
    pool: list[Speaker] = field(default_factory=list)
    dropped_speakers: list[dict[str, str]] = field(default_factory=list)  # unusable reference clips
    # set by the runner for one pass
    run_id: str = "r0"  # the runner sets r<UTC time>; part names start with it (layout.OWN_PATTERNS)
    llm_base_url: str | None = None
    done_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # kept or rejected
    plan_skip: np.ndarray | None = None  # done_ids plus IDs already in the text cache (never paid twice)
    quota: dict[str, int] | None = None  # exact-count mode: kept conversations still wanted per language
    text_from: Path | str | None = None  # where cached text is read from (default: the output folder)
    write_samples: bool = True           # False: a text-only run
    adopt_output: bool = False           # --adopt-output: a non-empty folder without the marker may be used

    def layout(self, location: Path | str | None = None) -> Layout:
        """The output (or another output, e.g. --text-from) with this run's storage settings."""
        return Layout(self.out_dir if location is None else location, self.cfg.storage.env_names())


class Stage:
    name: ClassVar[str] = "stage"

    resources: Resources = Resources()
    batch_size: int | None = None

    def __init__(self) -> None:
        self._ready = False

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        """Problems this stage would hit with `ctx.cfg` (checked before Ray starts); may record what it found."""
        return []

    @classmethod
    def build(cls, ctx: RunContext) -> Stage:
        raise NotImplementedError

    def setup(self) -> None:
        """Load models once per worker (runs in the Ray actor, not the driver)."""

    def process_batch(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def __call__(self, batch: pa.Table | dict) -> pa.Table:
        if not self._ready:
            self.setup()
            self._ready = True
        return self.process_batch(batch if isinstance(batch, pa.Table) else rows_to_table(table_to_rows(batch)))


class RowStage(Stage):
    """A stage that looks at one conversation at a time (or a list of them, for batched models)."""

    def process_row(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.guarded(row, self.process_row, row)

    def guarded(self, row: dict[str, Any], fn: Callable, *args: Any) -> Any:
        """Run fn; a `Rejected` or an unexpected error rejects this row instead of failing the batch. The time it
        took is added to the row's `<stage>_busy_s` where the schema has one (the cost section of stats.json)."""
        busy = f"{self.name}_busy_s"
        started = time.perf_counter()
        try:
            inject(self.name, row.get("conversation_id"))
            return fn(*args)
        except Rejected as exc:
            reject(row, self.name, exc.reason, exc.details, exc.failures, exc.duplicate_of)
        except Exception as exc:  # one bad conversation must not kill the job; the reason is recorded
            log.warning("%s: conversation %s failed: %s", self.name, row.get("conversation_id"), exc, exc_info=True)
            reject(row, self.name, f"{self.name}_error", f"{type(exc).__name__}: {exc}")
        finally:
            if busy in BUSY_COLUMNS:
                row[busy] = (row.get(busy) or 0.0) + time.perf_counter() - started
        return None

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = table_to_rows(batch)
        live = [r for r in rows if not is_rejected(r)]
        if live:
            checkpoint(self.name)
            self.process_rows(live)
        return rows_to_table(rows)


@dataclass(frozen=True)
class ReadTask:
    """One independent piece of a stream's input: `read()` yields Arrow blocks."""

    read: Callable[[], Iterator[pa.Table]]
    num_rows: int | None = None
    size_bytes: int | None = None
    input_files: tuple[str, ...] | None = None


class ReadStage(Stage):
    """A stage that starts a stream: the executor reads `read_tasks()` and maps `process_batch` over the blocks.
    A read stage after the first one in a flow adds its stream to the flow there (a union)."""

    read_cpus: float = 0.05  # what each read task asks for (a whole CPU would wait behind the model actors)

    def read_tasks(self, parallelism: int) -> list[ReadTask]:
        raise NotImplementedError

    def estimated_blocks(self) -> int | None:
        """How many blocks to ask Ray for (None: Ray's default)."""
        return None


class ProcessorStage(Stage):
    """A stage the executor runs as an engine processor of ray.data.llm (vLLM engine actors on GPUs): it gives
    the engine's settings (`processor_kwargs`) and the row functions around it (`preprocess`, `postprocess`)."""

    processor_kwargs: dict[str, Any] = {}

    def preprocess(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def postprocess(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError
