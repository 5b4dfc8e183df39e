"""Duplicate IDs: a conversation that arrives twice in one run (a retried upstream batch, the text cache and
the plan both yielding it) is passed on once; the second copy is dropped before anything is written twice."""

from __future__ import annotations

import logging

import pyarrow as pa

from pipeline.stages.base import Resources, RunContext, Stage

log = logging.getLogger(__name__)


class DuplicateIdStage(Stage):
    name = "dedup_ids"
    resources = Resources(num_cpus=0.0, actors=1, single=True)  # one actor sees every ID of the run

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    @classmethod
    def build(cls, ctx: RunContext) -> DuplicateIdStage:
        return cls()

    def process_batch(self, batch: pa.Table) -> pa.Table:
        keep = []
        for i, conv_id in enumerate(batch.column("conversation_id").to_pylist()):
            if conv_id in self.seen:
                log.warning("conversation %s arrived twice in one run; the second copy is dropped", conv_id)
                continue
            self.seen.add(conv_id)
            keep.append(i)
        return batch if len(keep) == batch.num_rows else batch.take(keep)
