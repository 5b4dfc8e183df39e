"""Quota (exact-count mode, `target.conversations`): keep at most the number of conversations still wanted per
language in this run; one past the quota is recorded as rejected (`target_reached`), so a rerun skips it too."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.schema import is_rejected, reject, rows_to_table, table_to_rows
from pipeline.stages.base import Resources, RunContext, Stage


class QuotaStage(Stage):
    name = "quota"
    resources = Resources(num_cpus=0.0, actors=1, single=True)  # one actor counts for the whole run

    def __init__(self, quota: dict[str, int]):
        super().__init__()
        self.quota = dict(quota)

    @classmethod
    def build(cls, ctx: RunContext) -> QuotaStage:
        assert ctx.quota is not None
        return cls(ctx.quota)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows: list[dict[str, Any]] = table_to_rows(batch)
        for row in rows:
            if is_rejected(row):
                continue
            left = self.quota.get(row["language"], 0)
            if left <= 0:
                reject(row, self.name, "target_reached", f"{row['language']}: target of kept conversations reached")
            else:
                self.quota[row["language"]] = left - 1
        return rows_to_table(rows)
