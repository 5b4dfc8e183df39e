"""Quota (exact-count mode, `target.conversations`): keep at most the number of conversations still wanted per
language in this run; one past the quota is recorded as rejected (`target_reached`), so a rerun skips it too.

The quota runs in the shard writer's actor. When that actor dies and Ray restarts it, the new one counts what is
on disk again (`setup`): the conversations the dead actor had already written are not counted twice, and a
retried batch whose shard was already written passes those conversations as they are (same shard, same name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.faults import inject, note
from pipeline.ids import is_done
from pipeline.io.layout import Layout
from pipeline.schema import is_rejected, reject, rows_to_table, table_to_rows
from pipeline.stages.base import Resources, RunContext, Stage


class QuotaStage(Stage):
    name = "quota"
    resources = Resources(num_cpus=0.0, actors=1, single=True)  # one actor counts for the whole run

    def __init__(self, quota: dict[str, int], out_dir: Path | str | Layout | None = None, target: int | None = None):
        super().__init__()
        self.quota = dict(quota)
        self.out_dir, self.target = out_dir, target
        self.kept_on_disk = np.empty(0, dtype=np.uint64)

    @classmethod
    def build(cls, ctx: RunContext) -> QuotaStage:
        assert ctx.quota is not None
        return cls(ctx.quota, ctx.layout() if ctx.out_dir is not None else None, ctx.cfg.target.conversations)

    def setup(self) -> None:
        """The quota from what the output holds now (at a round's start the runner's figure; after a restart of
        this actor, less what the actor before it wrote)."""
        if self.out_dir is None or self.target is None:
            return
        layout = self.out_dir if isinstance(self.out_dir, Layout) else Layout(self.out_dir)
        self.kept_on_disk, per_language = layout.kept_per_language()
        self.quota = {lang: max(0, self.target - per_language.get(lang, 0)) for lang in self.quota}

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows: list[dict[str, Any]] = table_to_rows(batch)
        for row in rows:
            if is_rejected(row) or is_done(self.kept_on_disk, row["conversation_id"]):
                continue  # a retried batch: already written and counted
            left = self.quota.get(row["language"], 0)
            if left <= 0:
                inject("quota_full", row["conversation_id"])  # the crash tests kill the actor right here
                reject(row, self.name, "target_reached", f"{row['language']}: target of kept conversations reached")
            else:
                self.quota[row["language"]] = left - 1
                if left == 1:  # the last place of the target: by construction in the last round
                    note("quota.filled", row["conversation_id"])  # crash tests aim at this conversation
                    inject("quota.filled", row["language"])
        return rows_to_table(rows)
