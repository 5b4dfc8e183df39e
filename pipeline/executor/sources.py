"""A read stage as a Ray datasource: its read tasks, read with a tiny CPU request.

`ray.data.range` and `read_parquet` cannot take resource arguments and their tasks ask for a whole CPU,
which the model actors already hold on a small machine; a read stage's tasks ask for `read_cpus` instead.
"""

from __future__ import annotations

from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from pipeline.stages.base import ReadStage


class StageSource(Datasource):
    def __init__(self, stage: ReadStage):
        self.stage = stage

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        return [ReadTask(task.read, BlockMetadata(num_rows=task.num_rows, size_bytes=task.size_bytes, exec_stats=None,
                                                  input_files=task.input_files),
                         per_task_row_limit=per_task_row_limit)
                for task in self.stage.read_tasks(parallelism)]
