"""Nothing may delete, rewrite, read as data or publish what the pipeline did not write: a user's files planted in
every folder of a real output survive restart cleanup, are not listed as parts or shards, are not read as kept
or rejected conversations, and are not uploaded; the pipeline's own unfinished files still go."""

import pyarrow.parquet as pq
from rows import shard_conversation as conversation

from pipeline.io.layout import Layout, is_own_name
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
