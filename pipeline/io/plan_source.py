"""A Ray Data source of plan indices [0, n): the streaming input of the plan stage.

`ray.data.range` cannot take resource arguments and its read tasks ask for a whole CPU, which the model
actors already hold on a small machine; this source is read with a tiny CPU request instead.
Each read task emits its indices in blocks, so planning millions of conversations never materialises them.
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata


class PlanIndexSource(Datasource):
    def __init__(self, n: int, block_rows: int):
        self.n, self.block_rows = n, max(1, block_rows)

    def estimate_inmemory_data_size(self) -> int:
        return self.n * 8

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        tasks = max(1, min(parallelism, -(-self.n // self.block_rows)))
        step = -(-self.n // tasks)
        out = []
        for start in range(0, self.n, step):
            stop = min(self.n, start + step)
            out.append(ReadTask(self._reader(start, stop, self.block_rows),
                                BlockMetadata(num_rows=stop - start, size_bytes=(stop - start) * 8, exec_stats=None,
                                              input_files=None),
                                per_task_row_limit=per_task_row_limit))
        return out

    @staticmethod
    def _reader(start: int, stop: int, block_rows: int):
        def read() -> Iterator[pa.Table]:
            for lo in range(start, stop, block_rows):
                yield pa.table({"id": pa.array(range(lo, min(stop, lo + block_rows)), type=pa.int64())})
        return read
