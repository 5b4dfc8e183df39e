import hashlib
import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from rows import shard_conversation as conversation

from pipeline.audio import decode_audio
from pipeline.io.layout import Layout, file_sha256
from pipeline.io.ownership import claim_output
from pipeline.io.shard_writer import _Headers, member_offsets, write_tar
from pipeline.io.storage import Store
from pipeline.schema import rows_to_table
from pipeline.stages.shard import ShardStage


@pytest.fixture()
def written(tmp_path):
    claim_output(Store(tmp_path), "ds")  # a run marks its output before writing (restart cleanup needs the marker)
    stage = ShardStage(tmp_path, "rtest", ["tts:test"])
    rows = [conversation(1, 2), conversation(2, 3), conversation(3, 1, rejected=True)]
    outcomes = stage(rows_to_table(rows)).to_pylist()
    return tmp_path, rows, outcomes


def test_round_trip_with_webdataset(written):
    root, rows, outcomes = written
    layout = Layout(root)
    [tar] = layout.shards()
    assert tar.parent == root / "data/en/train" and tar.name.startswith("shard-rtest-")
    samples = list(wds.WebDataset(str(tar), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"en-{1:016x}_000", f"en-{1:016x}_001",
                                                f"en-{2:016x}_000", f"en-{2:016x}_001", f"en-{2:016x}_002"]
    for s in samples:
        assert set(s) >= {"json", "user.flac", "assistant.flac"}
        meta = json.loads(s["json"])
        conv = next(r for r in rows if r["conversation_id"] == meta["conversation_id"])
        ex = meta["exchange_index"]
        user, _ = decode_audio(s["user.flac"])
        expected, _ = decode_audio(conv["turns"][2 * ex]["audio_flac"])
        np.testing.assert_array_equal(user, expected)
        assert meta["user"]["spoken_text"] == conv["turns"][2 * ex]["spoken_text"]
        assert meta["assistant"]["sample_rate"] == 22050 and meta["user"]["sample_rate"] == 16000
        assert meta["exchange_count"] == conv["num_exchanges"]
        assert meta["history"].count("\n") == max(0, 2 * ex - 1)
    assert not list(root.rglob("*.tmp"))


def test_manifest_offsets_and_rejects(written):
    root, rows, outcomes = written
    layout = Layout(root)
    manifest = pq.read_table(layout.manifest_parts()[0]).to_pylist()
    assert len(manifest) == 5 and layout.manifest_parts()[0].stem == layout.shards()[0].stem
    data = layout.shards()[0].read_bytes()
    for m in manifest:  # a tar reader started at the offset finds that sample's members first
        with tarfile.open(fileobj=io.BytesIO(data[m["offset"]:]), mode="r|") as tf:
            assert next(iter(tf)).name.startswith(m["key"] + ".")
    # offsets and checksum are taken while writing: they must equal what reading the finished tar gives
    assert {m["key"]: m["offset"] for m in manifest} == member_offsets(layout.shards()[0])
    assert {m["shard_sha256"] for m in manifest} == {file_sha256(layout.shards()[0])}
    rejects = pq.read_table(layout.reject_parts()[0]).to_pylist()
    assert [(r["conversation_id"], r["stage"], r["reason"]) for r in rejects] == [
        (f"en-{3:016x}", "verify", "asr_error_rate_above_threshold")]
    assert sorted(o["outcome"] for o in outcomes) == ["kept", "kept", "rejected"]
    assert len(layout.done_ids()) == 3


def test_retried_batch_rewrites_the_same_shard(written):
    root, rows, _ = written
    ShardStage(root, "rtest", ["tts:test"])(rows_to_table(rows))
    assert len(Layout(root).shards()) == 1 and len(Layout(root).manifest_parts()) == 1


def test_unfinished_tar_is_cleaned(written):
    root, _, _ = written
    layout = Layout(root)
    orphan = layout.shard_dir("en", "train") / "shard-rx-000000000000.tar"
    orphan.write_bytes(b"partial")
    tmp = layout.manifest / "shard-rx-000000000001.parquet.tmp"
    tmp.write_bytes(b"partial")
    assert sorted(layout.clean_unfinished()) == sorted([tmp, orphan])
    assert len(layout.shards()) == 1


def test_loads_with_hf_datasets_and_decodes_audio(written):
    datasets = pytest.importorskip("datasets")
    root, rows, _ = written
    ds = datasets.load_dataset("webdataset", data_files={"train": [str(p) for p in Layout(root).shards()]},
                               split="train")
    assert ds.num_rows == 5 and set(ds.column_names) >= {"json", "user.flac", "assistant.flac"}
    row = ds[2]
    assert row["json"]["conversation_id"] == f"en-{2:016x}" and row["json"]["exchange_index"] == 0
    user = row["user.flac"]
    samples = user["array"] if isinstance(user, dict) else user.get_all_samples().data.numpy()[0]
    rate = user["sampling_rate"] if isinstance(user, dict) else user.get_all_samples().sample_rate
    expected, _ = decode_audio(rows[1]["turns"][0]["audio_flac"])
    assert rate == 16000
    np.testing.assert_allclose(np.asarray(samples).reshape(-1), expected, atol=1e-4)


def test_quota_keeps_exactly_the_target_and_records_the_rest(tmp_path):
    from pipeline.stages.quota import QuotaStage

    quota, shard = QuotaStage({"en": 3}), ShardStage(tmp_path, "rq", ["t"])
    first = shard(quota(rows_to_table([conversation(i, 1) for i in range(2)]))).to_pylist()
    second = shard(quota(rows_to_table([conversation(i, 1) for i in range(2, 5)]))).to_pylist()
    outcomes = [o["outcome"] for o in first + second]
    assert outcomes.count("kept") == 3 and outcomes.count("rejected") == 2
    rejects = [r for p in Layout(tmp_path).reject_parts() for r in pq.read_table(p).to_pylist()]
    assert {(r["stage"], r["reason"]) for r in rejects} == {("quota", "target_reached")}
    assert len(Layout(tmp_path).done_ids()) == 5


def reference_tar(samples, mtime):
    """The same samples written by the standard library's tar writer (what webdataset's TarWriter uses)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for sample in samples:
            for ext in sorted(k for k in sample if not k.startswith("_")):
                data = sample[ext].encode() if isinstance(sample[ext], str) else sample[ext]
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size, info.mtime, info.mode, info.uname, info.gname = len(data), mtime, 0o444, "bigdata", "bigdata"
                tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def odd_samples():
    """Payload sizes around the 512-byte block and over the 1 MB chunk, an empty member, a str payload, a
    non-ASCII key and a 120-character key (both need a pax header) and enough bytes for several chunks."""
    rng = np.random.default_rng(7)
    sizes = [0, 1, 511, 512, 513, 1023, 1024, 1025, 70_001, 1_300_000] + [200_000] * 12
    samples = [{"__key__": f"s{i:03d}", "json": json.dumps({"i": i}), "user.flac": rng.bytes(n),
                "assistant.flac": rng.bytes(n // 3)} for i, n in enumerate(sizes)]
    samples.append({"__key__": "sprecher-größe", "json": "{}", "user.flac": b"x" * 700})
    samples.append({"__key__": "k" * 120, "json": "{}", "user.flac": memoryview(b"y" * 900)})
    return samples


@pytest.mark.parametrize("target", ["file", "bytesio"])
def test_write_tar_is_byte_identical_to_tarfile(tmp_path, target):
    """The writer builds headers from a template and writes with writev on a thread: the bytes must be
    exactly the standard library's, and the offsets and sha256 it returns must be those of the file."""
    samples = odd_samples()
    if target == "file":
        path = tmp_path / "t.tar"
        with open(path, "wb") as fh:
            offsets, digest = write_tar(fh, iter(samples))
        data = path.read_bytes()
    else:
        buf = io.BytesIO()
        offsets, digest = write_tar(buf, samples)
        data = buf.getvalue()
        path = tmp_path / "t.tar"
        path.write_bytes(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        mtime = tf.next().mtime
    expected = reference_tar(samples, mtime)
    assert len(data) == len(expected) and data == expected
    assert digest == hashlib.sha256(data).hexdigest() == file_sha256(path)
    assert offsets == member_offsets(path) and len(offsets) == len(samples)
    read = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in read] == [s["__key__"] for s in samples]
    for got, sent in zip(read, samples):
        assert got["user.flac"] == bytes(sent["user.flac"])
        assert got["json"] == (sent["json"].encode() if isinstance(sent["json"], str) else sent["json"])


def test_template_headers_match_tarfile():
    """Every field the template changes (name, size, checksum) against tarfile's own header."""
    headers = _Headers(1_764_000_000)
    for name in ["a.json", "en-00000000000000ff_000.user.flac", "x" * 100, "x" * 101, "é.flac"]:
        for size in [0, 1, 511, 512, 10**6, 8**11 - 1, 8**11]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = size, 1_764_000_000, 0o444, "bigdata", "bigdata"
            assert headers(name, size) == info.tobuf(tarfile.PAX_FORMAT, "utf-8"), (name, size)


def test_failed_write_leaves_no_files(tmp_path):
    """A sample that cannot be written (audio that is not bytes) fails the shard and leaves neither the
    tar nor its manifest part, nor a temp file, behind."""
    from pipeline.io.shard_writer import write_shard

    good, bad = rows_to_table([conversation(0, 1), conversation(1, 1)]).to_pylist()
    bad["turns"][1]["audio_flac"] = 12345
    with pytest.raises(TypeError, match="assistant.flac is int"):
        write_shard(Layout(tmp_path), "shard-rf-x", [good, bad], "en", "train", ["t"])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_write_error_on_the_writer_thread_reaches_the_caller(tmp_path):
    """writev runs on a worker thread: its error (here EBADF, a file opened for reading) must be raised."""
    path = tmp_path / "ro.tar"
    path.write_bytes(b"")
    with open(path, "rb") as fh, pytest.raises(OSError):
        write_tar(fh, odd_samples())
    assert path.read_bytes() == b""


def test_manifest_part_without_its_tar_is_cleaned(written):
    """The tar and its part are renamed before their folders are fsynced: a power cut may keep only the
    part. A restart must then drop the part too, or its conversations would count as done with no audio."""
    root, _, _ = written
    layout = Layout(root)
    [tar], [part] = layout.shards(), layout.manifest_parts()
    ids_before = layout.done_ids()
    tar.unlink()  # what the disk holds if the tar's rename was lost
    assert layout.clean_unfinished() == [part]
    assert layout.manifest_parts() == [] and len(layout.done_ids()) == len(ids_before) - 2  # the rejected one stays
