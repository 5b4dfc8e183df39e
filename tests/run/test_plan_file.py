"""The standalone planner: specs streamed to Parquet equal the Ray plan's specs; the CLI writes the file."""

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import REPO_ROOT
from pipeline.llm.prompts import Taxonomy
from pipeline.run.plan_file import SPEC_COLUMNS, make_plan_stage, write_plan
from pipeline.stages.plan import _pick, _Picker
from tests.conftest import small_config


def test_cached_picker_draws_exactly_what_rng_choice_draws():
    tax = Taxonomy.load(REPO_ROOT / "prompts/en/taxonomy.yaml")
    for items in (tax.topics, tax.scenarios, tax.personas, [("a", 1.0), ("b", 2.5), ("c", 0.001), ("d", 7.0)]):
        picker = _Picker(items)
        for seed in range(300):
            a, b = np.random.default_rng([seed, 7]), np.random.default_rng([seed, 7])
            assert [_pick(a, items) for _ in range(3)] == [picker(b) for _ in range(3)]
            assert a.integers(0, 2**31 - 1) == b.integers(0, 2**31 - 1)  # the generators stay in step


def test_plan_file_equals_the_plan_stage_in_row_groups(tmp_path):
    cfg = small_config(tmp_path / "o", "plan.languages=[en,zh]", "plan.exchanges.zh.min=1", "plan.exchanges.zh.max=3",
                       "shard.splits.train=0.9", "shard.splits.test=0.1")
    out = tmp_path / "specs.parquet"
    seen = []
    result = write_plan(cfg, out, total=1000, block_rows=300, progress=seen.append)
    assert result["rows"] == 1000 and seen == [300, 600, 900, 1000]
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == 4 and meta.row_group(0).num_rows == 300  # blocks, not one in-memory table
    table = pq.read_table(out)
    assert table.column_names == list(SPEC_COLUMNS)
    expected = make_plan_stage(cfg)(pa.table({"id": list(range(1000))})).select(list(SPEC_COLUMNS))
    assert table.to_pylist() == expected.to_pylist()
    assert {r["language"] for r in table.to_pylist()} == {"en", "zh"}
    assert {r["split"] for r in table.to_pylist()} == {"train", "test"}
    assert len(set(table.column("conversation_id").to_pylist())) == 1000
    assert not list(tmp_path.glob("*.tmp"))


def test_plan_rejects_a_negative_count(tmp_path):
    with pytest.raises(ValueError, match="total=-1"):
        write_plan(small_config(tmp_path / "o"), tmp_path / "s.parquet", total=-1)


def test_plan_subcommand_writes_the_configured_count(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "specs.parquet"
    res = subprocess.run([sys.executable, "pipeline/main.py", "plan", "--config", "configs/smoke.yaml", "--out", str(out),
                          "plan.num_conversations=250"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"250 conversation specs -> {out}" in res.stdout
    assert pq.ParquetFile(out).metadata.num_rows == 250
    bad = subprocess.run([sys.executable, "pipeline/main.py", "plan", "--config", "configs/smoke.yaml", "--out", str(out),
                          "plan.num_conversations=oops"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
                         timeout=120)
    assert bad.returncode == 2 and "num_conversations" in bad.stderr
