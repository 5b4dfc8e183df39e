"""Shared bookkeeping for stages: batch conversion, skipping rejected rows, turning failures into reasons.

A stage implements `process_row` (or `process_rows` for batched models) and raises `Rejected` with a short
reason code when a conversation must be dropped; it never writes files or counts things itself.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from pipeline.faults import checkpoint, inject
from pipeline.records import is_rejected, reject, rows_to_table, table_to_rows

log = logging.getLogger(__name__)


class Rejected(Exception):
    """Raised by a stage to drop one conversation with a reason code and human-readable details."""

    def __init__(self, reason: str, details: str = ""):
        super().__init__(f"{reason}: {details}" if details else reason)
        self.reason, self.details = reason, details


class Stage:
    name = "stage"

    def __init__(self) -> None:
        self._ready = False

    def setup(self) -> None:
        """Load models once per worker (runs in the Ray actor, not the driver)."""

    def process_row(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.guarded(row, self.process_row, row)

    def guarded(self, row: dict[str, Any], fn, *args) -> Any:
        """Run fn; a `Rejected` or an unexpected error rejects this row instead of failing the batch."""
        try:
            inject(self.name, row.get("conversation_id"))
            return fn(*args)
        except Rejected as exc:
            reject(row, self.name, exc.reason, exc.details)
        except Exception as exc:  # one bad conversation must not kill the job; the reason is recorded
            log.warning("%s: conversation %s failed: %s", self.name, row.get("conversation_id"), exc, exc_info=True)
            reject(row, self.name, f"{self.name}_error", f"{type(exc).__name__}: {exc}")
        return None

    def __call__(self, batch: pa.Table | dict) -> pa.Table:
        if not self._ready:
            self.setup()
            self._ready = True
        rows = table_to_rows(batch)
        live = [r for r in rows if not is_rejected(r)]
        if live:
            checkpoint(self.name)
            self.process_rows(live)
        return rows_to_table(rows)
