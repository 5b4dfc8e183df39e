"""Nothing may delete, rewrite, read as data or publish what the pipeline did not write: a user's files planted in
every folder of a real output survive restart cleanup, are not listed as parts or shards, are not read as kept
or rejected conversations, and are not uploaded; the pipeline's own unfinished files still go.

The output is owned and marked: the marker, refusing a folder (or prefix) that is not the pipeline's, adopting
one explicitly, and restart cleanup of the pipeline's own unfinished names only, listed one by one; the same
rules on a local folder and on S3 (moto's server, tests/s3_server.py). Real runs that keep foreign files
through kills and restarts are in tests/run/test_kill_resume.py and tests/cluster/test_two_nodes.py."""

import json
import logging
import sys

import pyarrow.parquet as pq
import pytest
from proc import run as run_proc
from rows import shard_conversation as conversation

from pipeline.config import REPO_ROOT, ConfigError, load_config
from pipeline.io.layout import MARKER, Layout, is_own_name, is_own_temp
from pipeline.io.ownership import OutputNotOwned, claim_output, clean_unfinished, ownership_problem, read_marker
from pipeline.io.storage import Store
from pipeline.io.text_cache import cached_parts
from pipeline.io.verify_output import verify_output
from pipeline.publish.hub import is_uploaded_path
from pipeline.schema import rows_to_table
from pipeline.stages.shard import ShardStage
from pipeline.training.loader import find_shards

FOREIGN = {
    "data/en/train/holiday-photos.tar": b"my photos",
    "data/en/train/shard-notes.tar": b"named like a shard, but not a name the pipeline writes",
    "manifest/notes.parquet": b"my notes",
    "rejects/mine.parquet": b"mine",
    "text/draft.parquet": b"draft",
    "state/todo.txt": b"todo",
    "state/near_dup/notes.parquet": b"n",
    "data/en/duplex/train/other.tar": b"other",
    "manifest/duplex/x.parquet": b"x",
    "notes/draft.tmp": b"a user's temp file",
    "manifest/notes.parquet.tmp": b"another",
    "README.md.bak": b"backup",
}


def build(root):
    stage = ShardStage(root, "rv", ["t"])
    stage(rows_to_table([conversation(1, 2), conversation(2, 1)]))
    stage(rows_to_table([conversation(3, 1), conversation(4, 1, rejected=True)]))
    for rel, data in FOREIGN.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def foreign_contents(root):
    return {rel: (root / rel).read_bytes() if (root / rel).is_file() else None for rel in FOREIGN}


def test_restart_cleanup_removes_only_the_pipelines_unfinished_files(tmp_path):
    root = tmp_path / "ds"
    build(root)
    layout = Layout(root)
    [tar, *_] = layout.shards()
    own_orphan = tar.with_name("shard-rv-0123456789ab.tar")  # a tar of the pipeline's whose part was never written
    own_orphan.write_bytes(tar.read_bytes())
    own_temp = root / "rejects" / "part-rv-0123456789ab.parquet.tmp"
    own_temp.write_bytes(b"half a part")
    for _ in range(3):  # any number of restarts
        layout.clean_unfinished()
        assert foreign_contents(root) == FOREIGN
    assert not own_orphan.exists() and not own_temp.exists()
    assert verify_output(root) == []  # the user's files are not problems of the dataset either


def test_foreign_files_are_not_read_as_data_nor_published(tmp_path):
    root = tmp_path / "ds"
    build(root)
    layout = Layout(root)
    listed = layout.shards() + layout.manifest_parts() + layout.reject_parts() + cached_parts(root)
    listed += layout.duplex_shards() + layout.duplex_manifest_parts()
    assert listed and not [p for p in listed if p.relative_to(root).as_posix() in FOREIGN]
    assert len(layout.done_ids()) == 4  # 3 kept + 1 rejected, none from manifest/notes.parquet
    assert sum(pq.read_table(p).num_rows for p in layout.manifest_parts()) == 4  # exchanges of the kept three
    assert [p.split("/")[-1] for p in find_shards(root)] == [t.name for t in layout.shards()]
    assert not [rel for rel in FOREIGN if is_uploaded_path(rel)]
    assert all(is_uploaded_path(p.relative_to(root).as_posix()) for p in layout.shards() + layout.manifest_parts())
    assert not [rel for rel in FOREIGN if is_own_name(rel)]


# a user's files in every folder of an output: none of them may ever be removed, replaced or read as data
STORE_FOREIGN = {
    "notes/draft.tmp": b"my draft",
    "draft.tmp": b"a temp file of mine",
    "data/en/train/holiday-photos.tar": b"photos",
    "data/en/train/holiday-photos.tar.tmp": b"photos, half copied",
    "data/en/train/shard-mine.tar": b"a tar I named like a shard",
    "manifest/notes.parquet": b"not a manifest",
    "manifest/shard-mine.parquet.tmp": b"x",
    "rejects/mine.parquet": b"x",
    "text/part-mine.parquet": b"x",
    "state/my-notes.txt": b"x",
    "state/runs.jsonl.bak": b"x",
}


def own_unfinished(store):
    """What an interrupted run leaves: a temp file, a tar without its manifest part, a part without its tar."""
    store.write_bytes("manifest/shard-r20260101T000000-0123456789ab.parquet.tmp", b"half")
    store.write_bytes("data/en/train/shard-r20260101T000000-0123456789ab.tar", b"tar, no part")
    store.write_bytes("manifest/shard-r20260101T000000-aaaaaaaaaaaa.parquet", b"part, no tar")
    store.write_bytes("stats.json.tmp", b"{")
    return sorted(["manifest/shard-r20260101T000000-0123456789ab.parquet.tmp",
                   "data/en/train/shard-r20260101T000000-0123456789ab.tar",
                   "manifest/shard-r20260101T000000-aaaaaaaaaaaa.parquet", "stats.json.tmp"])


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store(request, tmp_path):
    if request.param == "local":
        return Store(tmp_path / "ds")
    return Store(f"{request.getfixturevalue('s3_bucket')}/ds")


def test_the_pipeline_s_own_names():
    for rel in ("data/en/train/shard-r20260101T101010-0123456789ab.tar", "manifest/shard-r1-0123456789ab.parquet",
                "rejects/part-r1-0123456789ab.parquet", "text/part-r1-0123456789ab.parquet", "README.md",
                "stats.json", "config.yaml", "config.en-zh.yaml", "state/runs.jsonl", MARKER):
        assert is_own_name(rel), rel
    for rel in STORE_FOREIGN:
        assert not is_own_name(rel) and not is_own_temp(rel), rel
    assert is_own_temp("stats.json.tmp") and not is_own_temp("notes/stats.json.tmp")


def test_a_new_output_gets_the_marker(store):
    assert ownership_problem(store, "ds") is None  # missing: fine
    marker = claim_output(store, "ds")
    assert read_marker(store) == marker and marker["dataset"] == "ds" and marker["layout_version"] == 1
    assert json.loads(store.read_text(MARKER))["dataset"] == "ds"
    assert ownership_problem(store, "ds") is None  # marked: fine again


def test_a_non_empty_unmarked_output_is_refused_then_adopted_explicitly(store):
    for rel, data in STORE_FOREIGN.items():
        store.write_bytes(rel, data)
    problem = ownership_problem(store, "ds")
    assert store.url in problem and "--adopt-output" in problem and "data/en/train/holiday-photos.tar" in problem
    with pytest.raises(OutputNotOwned):
        claim_output(store, "ds")
    assert read_marker(store) is None  # nothing written on refusal
    claim_output(store, "ds", adopt=True)
    assert read_marker(store)["adopted"] is True and ownership_problem(store, "ds") is None
    assert {rel: store.read_bytes(rel) for rel in STORE_FOREIGN} == STORE_FOREIGN


def test_another_dataset_s_output_is_refused(store):
    claim_output(store, "first")
    assert "holds the dataset 'first'" in ownership_problem(store, "second")
    claim_output(store, "second", adopt=True)
    assert read_marker(store)["datasets"] == ["first", "second"]


def test_cleanup_removes_only_own_unfinished_names_and_lists_each(store, caplog):
    claim_output(store, "ds")
    for rel, data in STORE_FOREIGN.items():
        store.write_bytes(rel, data)
    finished = "data/en/train/shard-r20260101T000000-bbbbbbbbbbbb.tar"
    store.write_bytes(finished, b"tar")
    store.write_bytes("manifest/shard-r20260101T000000-bbbbbbbbbbbb.parquet", b"its part")
    expected = own_unfinished(store)
    with caplog.at_level(logging.WARNING, logger="pipeline.io.layout"):
        assert sorted(clean_unfinished(store)) == expected
    for rel in expected:
        assert any(rel in m for m in caplog.messages), rel  # each removed file is named
    assert {rel: store.read_bytes(rel) for rel in STORE_FOREIGN} == STORE_FOREIGN
    assert store.is_file(finished)
    for _ in range(3):  # any number of restarts
        assert clean_unfinished(store) == []
    assert {rel: store.read_bytes(rel) for rel in STORE_FOREIGN} == STORE_FOREIGN
    # the readers never take a foreign file for a part
    layout = Layout(store)
    assert [layout.rel(p) for p in layout.shards()] == [finished]
    assert [layout.rel(p) for p in layout.manifest_parts()] == ["manifest/shard-r20260101T000000-bbbbbbbbbbbb.parquet"]
    assert layout.reject_parts() == [] and layout.text_parts() == []


def test_nothing_is_removed_from_an_output_without_the_marker(store):
    expected = own_unfinished(store)
    assert clean_unfinished(store) == []
    assert sorted(store.list_files()) == expected


def test_run_and_check_config_refuse_a_foreign_folder_before_ray_starts(tmp_path):
    out = tmp_path / "photos"
    (out / "data/en/train").mkdir(parents=True)
    (out / "data/en/train/holiday-photos.tar").write_bytes(b"photos")
    for command in ("run", "check-config"):
        res = run_proc([sys.executable, "pipeline/main.py", command, "--config", "configs/smoke.yaml",
                        "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert f"{out} is not empty and is not a speechchat output" in res.stderr and "--adopt-output" in res.stderr
        assert "Traceback" not in res.stderr
    res = run_proc([sys.executable, "pipeline/main.py", "check-config", "--config", "configs/smoke.yaml",
                    "--out", str(out), "--adopt-output"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "data/en/train/holiday-photos.tar"]  # check-config writes nothing


def test_an_empty_out_is_an_error():
    with pytest.raises(ConfigError, match="out_dir: .*is empty"):
        load_config(REPO_ROOT / "configs/smoke.yaml", [], "")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(REPO_ROOT / "configs/smoke.yaml", ["out_dir="])
