"""verify-output on a real written dataset folder, then on copies damaged in specific ways."""

import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from test_shard import conversation

from pipeline.config import REPO_ROOT
from pipeline.io.layout import Layout
from pipeline.io.ownership import claim_output
from pipeline.io.storage import Store
from pipeline.io.verify_output import verify_output
from pipeline.schema import rows_to_table
from pipeline.stages.shard import ShardStage


@pytest.fixture()
def dataset(tmp_path):
    root = tmp_path / "ds"
    claim_output(Store(root), "ds")
    stage = ShardStage(root, "rv", ["t"])
    stage(rows_to_table([conversation(1, 2), conversation(2, 1)]))
    stage(rows_to_table([conversation(3, 3), conversation(4, 1, rejected=True)]))
    return root


def test_a_sound_folder_passes_and_the_cli_says_ok(dataset):
    assert verify_output(dataset) == []
    res = subprocess.run([sys.executable, "pipeline/main.py", "verify-output", str(dataset)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "OK (2 shards, 6 samples, 1 rejects parts)" in res.stdout


def damaged(dataset, tmp_path, how):
    copy = tmp_path / f"copy-{how}"
    shutil.copytree(dataset, copy)
    layout = Layout(copy)
    tar = layout.shards()[0]
    if how == "truncated_tar":
        tar.write_bytes(tar.read_bytes()[:3000])
    elif how == "flipped_byte":
        data = bytearray(tar.read_bytes())
        data[-2000] ^= 0xFF
        tar.write_bytes(bytes(data))
    elif how == "missing_tar":
        tar.unlink()
    elif how == "orphan_tar":
        (tar.parent / "shard-rx-000000000000.tar").write_bytes(tar.read_bytes())
    elif how == "temp_file":
        (copy / "manifest" / "shard-rx-000000000000.parquet.tmp").write_bytes(b"x")
    elif how == "duplicate_manifest":
        part = layout.manifest_parts()[0]
        shutil.copy(part, part.with_name("shard-rdup-000000000000.parquet"))
    elif how == "kept_and_rejected":
        manifest_id = pq.read_table(layout.manifest_parts()[0]).column("conversation_id")[0].as_py()
        table = pq.read_table(layout.reject_parts()[0]).to_pylist()
        table[0]["conversation_id"] = manifest_id
        pq.write_table(rows_to_table(table, pq.read_schema(layout.reject_parts()[0])), layout.reject_parts()[0])
    return copy


@pytest.mark.parametrize("how, expected", [
    ("truncated_tar", "sha256 differs from the manifest"),
    ("flipped_byte", "sha256 differs from the manifest"),
    ("missing_tar", "is missing"),
    ("orphan_tar", "no manifest part (unfinished shard)"),
    ("temp_file", "leftover temp file manifest/shard-rx-000000000000.parquet.tmp"),
    ("duplicate_manifest", "appears 2 times"),
    ("kept_and_rejected", "is both kept and rejected"),
])
def test_damage_is_reported(dataset, tmp_path, how, expected):
    problems = verify_output(damaged(dataset, tmp_path, how))
    assert any(expected in p for p in problems), problems
    res = subprocess.run([sys.executable, "pipeline/main.py", "verify-output", str(damaged(dataset, tmp_path / "cli", how))],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and expected in res.stderr
