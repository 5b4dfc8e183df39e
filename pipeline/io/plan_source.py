"""Ray Data sources for the plan's inputs: plan indices [0, n) and cached Parquet parts.

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


class ParquetPartsSource(Datasource):
    """Reads whole Parquet part files, one read task per file, with the same tiny CPU request.

    (`ray.data.read_parquet` first runs a file-listing task that asks for a whole CPU: on a small machine
    whose CPUs the model actors hold, that task never gets scheduled.)
    """

    def __init__(self, paths: list[str]):
        self.paths = list(paths)

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        import pyarrow.parquet as pq

        tasks = []
        for path in self.paths:
            meta = pq.ParquetFile(path).metadata
            tasks.append(ReadTask(self._reader(path), BlockMetadata(num_rows=meta.num_rows, size_bytes=None,
                                                                    exec_stats=None, input_files=(path,)),
                                  per_task_row_limit=per_task_row_limit))
        return tasks

    @staticmethod
    def _reader(path: str):
        def read() -> Iterator[pa.Table]:
            import pyarrow.parquet as pq

            yield pq.read_table(path)
        return read
