"""Plan: expand the config into conversation specs with content-addressed IDs.

ID = hash(dataset, language, per-language index, digest of the text-side settings) (`pipeline.ids`), so a
rerun of the same config plans the same IDs and skips the ones already finished. The stage reads plan
indices [0, n) in blocks and maps each block to specs, so planning millions of conversations never holds
them in the driver.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.ids import conversation_id, id_to_u64, is_done, split_for
from pipeline.llm.prompts import Taxonomy
from pipeline.schema import rows_to_table
from pipeline.stages.base import ReadStage, ReadTask, RunContext


def _pick(rng: np.random.Generator, items: list[tuple[str, float]]) -> str:
    weights = np.array([w for _, w in items], dtype=float)
    return items[int(rng.choice(len(items), p=weights / weights.sum()))][0]


class _Picker:
    """`_pick` with the weights' CDF computed once: the same draw as `rng.choice(n, p=...)` (one uniform,
    searchsorted on the normalised cumulative sum), about 10x cheaper per call, which matters at 7M specs."""

    def __init__(self, items: list[tuple[str, float]]):
        weights = np.array([w for _, w in items], dtype=float)
        cdf = (weights / weights.sum()).cumsum()
        cdf /= cdf[-1]
        self.names, self.cdf = [name for name, _ in items], cdf

    def __call__(self, rng: np.random.Generator) -> str:
        return self.names[int(self.cdf.searchsorted(rng.random(), side="right"))]


@dataclass
class PlanStage(ReadStage):
    """Reads plan indices [0, total) (column `id`) and maps each block to conversation specs, minus finished IDs."""

    name = "plan"

    dataset: str
    languages: list[str]
    exchanges: dict[str, tuple[int, int]]
    seed: int
    text_digest: str
    splits: dict[str, float]
    taxonomies: dict[str, Taxonomy]
    done_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # sorted
    total: int = 0        # plan indices to read
    block_rows: int = 8   # indices per block (the LLM's batch size)

    def __post_init__(self) -> None:
        self._ready = False
        self._pickers = {lang: tuple(_Picker(items) for items in (tax.topics, tax.scenarios, tax.personas))
                         for lang, tax in self.taxonomies.items()}

    def spec(self, plan_index: int) -> dict[str, Any]:
        language = self.languages[plan_index % len(self.languages)]
        index = plan_index // len(self.languages)
        conv_id = conversation_id(self.dataset, language, index, self.text_digest)
        rng = np.random.default_rng([self.seed, id_to_u64(conv_id) & 0xFFFFFFFF, index])
        tax = self.taxonomies[language]
        pick_topic, pick_scenario, pick_persona = self._pickers[language]
        lo, hi = self.exchanges[language]
        return {
            "conversation_id": conv_id,
            "plan_index": plan_index,
            "dataset": self.dataset,
            "language": language,
            "split": split_for(conv_id, self.splits),
            "topic": (topic := pick_topic(rng)),
            "domain": tax.domains.get(topic, ""),
            "scenario": pick_scenario(rng),
            "persona": pick_persona(rng),
            "num_exchanges": int(rng.integers(lo, hi + 1)),
            "seed": int(rng.integers(0, 2**31 - 1)),
            "text_digest": self.text_digest,
        }

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        problems = []
        for lang in ctx.languages:
            try:
                Taxonomy.load(ctx.prompts_dir / lang / "taxonomy.yaml")
            except (OSError, ValueError) as exc:
                problems.append(str(exc))
        return problems

    @classmethod
    def build(cls, ctx: RunContext) -> PlanStage:
        cfg = ctx.cfg
        return cls(dataset=cfg.dataset, languages=list(cfg.plan.languages),
                   exchanges={k: (v.min, v.max) for k, v in cfg.plan.exchanges.items()}, seed=cfg.plan.seed,
                   text_digest=cfg.text_digest(), splits=dict(cfg.shard.splits),
                   taxonomies={lang: Taxonomy.load(ctx.prompts_dir / lang / "taxonomy.yaml")
                               for lang in cfg.plan.languages},
                   done_ids=ctx.done_ids if ctx.plan_skip is None else ctx.plan_skip,
                   total=cfg.plan.num_conversations * len(cfg.plan.languages), block_rows=cfg.llm.batch_size)

    # reading: each read task emits its indices in blocks, so millions of indices are never materialised
    def estimated_blocks(self) -> int:
        return max(1, min(math.ceil(self.total / max(1, self.block_rows)), 200))

    def read_tasks(self, parallelism: int) -> list[ReadTask]:
        block = max(1, self.block_rows)
        tasks = max(1, min(parallelism, -(-self.total // block)))
        step = max(1, -(-self.total // tasks))
        return [ReadTask(self._indices(start, min(self.total, start + step), block), num_rows=min(step, self.total - start),
                         size_bytes=min(step, self.total - start) * 8)
                for start in range(0, self.total, step)]

    @staticmethod
    def _indices(start: int, stop: int, block: int):
        def read() -> Iterator[pa.Table]:
            for lo in range(start, stop, block):
                yield pa.table({"id": pa.array(range(lo, min(stop, lo + block)), type=pa.int64())})
        return read

    def process_batch(self, batch: pa.Table) -> pa.Table:
        specs = [self.spec(int(i)) for i in batch.column("id").to_pylist()]
        return rows_to_table([s for s in specs if not is_done(self.done_ids, s["conversation_id"])])
