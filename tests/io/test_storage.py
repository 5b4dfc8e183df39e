"""Object storage through a real S3-compatible server (moto's standalone server on 127.0.0.1): the store, the
shard writer's commit protocol, unfinished multipart uploads, inputs cached per node, scrubbed errors, and URLs
the pipeline cannot write refused before anything starts."""

import io
import json
import sys
import tarfile

import pyarrow as pa
import pytest
from conftest import FAKE_AWS_KEY_ID, FAKE_AWS_SECRET
from proc import run as run_proc
from rows import shard_conversation as conversation
from s3_server import all_objects, s3fs_client, unfinished_uploads

from pipeline.config import REPO_ROOT, ConfigError, load_config
from pipeline.io.layout import Layout
from pipeline.io.ownership import claim_output
from pipeline.io.shard_writer import write_shard
from pipeline.io.storage import S3MultipartUpload, StorageError, Store, cached_copy, scrub_credentials
from pipeline.io.verify_output import verify_output
from pipeline.schema import rows_to_table

pytestmark = pytest.mark.integration  # moto's server (the first test runs the CLI only)


def rows(n=2, exchanges=1):
    return rows_to_table([conversation(i, exchanges) for i in range(1, n + 1)]).to_pylist()


@pytest.mark.parametrize("out, expected", [
    ("s3:/bucket/ds", "expected s3://<bucket>/<prefix> (did you mean s3://bucket/ds?)"),
    ("ftp://host/ds", "the pipeline cannot write ftp://"),
    ("s4://bucket/ds", "the pipeline cannot write s4://"),
    ("", "is empty"),
])
def test_a_location_the_pipeline_cannot_write_is_a_config_error_before_anything_starts(out, expected, tmp_path):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_config(REPO_ROOT / "configs/smoke.yaml", [], out)
    res = run_proc([sys.executable, str(REPO_ROOT / "pipeline/main.py"), "run", "--config",
                    str(REPO_ROOT / "configs/smoke.yaml"), "--out", out], cwd=tmp_path, capture_output=True,
                   text=True, timeout=120)
    assert res.returncode == 2 and expected in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == [] and not (REPO_ROOT / "s3:").exists()  # no folder named `s3:` anywhere
    assert "Traceback" not in res.stderr


def test_store_round_trip_on_s3(s3_bucket):
    store = Store(f"{s3_bucket}/ds")
    store.write_bytes("state/a.json", b'{"a": 1}')
    store.append_text("state/runs.jsonl", "one\n")
    store.append_text("state/runs.jsonl", "two\n")
    assert store.list_files() == ["state/a.json", "state/runs.jsonl"]
    assert store.read_text("state/runs.jsonl") == "one\ntwo\n" and store.size("state/a.json") == 8
    store.remove("state/a.json")
    assert store.list_files("state") == ["state/runs.jsonl"] and not store.exists("state/a.json")
    assert all_objects(f"{s3_bucket}/ds") == {"state/runs.jsonl": b"one\ntwo\n"}
    assert store.location("x/y") == f"{s3_bucket}/ds/x/y" and store.rel(f"{s3_bucket}/ds/x/y") == "x/y"


def test_a_shard_on_s3_is_a_completed_multipart_upload_then_its_manifest_part(s3_bucket):
    """Parts are cut at storage.part_size_mb (the smallest S3 allows here, so that one tar has several parts);
    the tar is whole and verify-output (which reads the bucket) finds the manifest's checksums and offsets."""
    layout = Layout(f"{s3_bucket}/ds", {"part_size_mb": 5, "multipart_threshold_mb": 5})
    claim_output(layout.store, "ds")
    big = rows(3, exchanges=2)
    for r in big:
        for t in r["turns"]:
            t["audio_flac"] = t["audio_flac"] + bytes(2 << 20)  # ~12 MB of members: three parts
    shard_rel, manifest = write_shard(layout, "shard-rt-000000000001", big, "en", "train", ["t"])
    assert shard_rel == "data/en/train/shard-rt-000000000001.tar"
    assert layout.store.list_files() == [".speechchat-output.json", "data/en/train/shard-rt-000000000001.tar",
                                         "manifest/shard-rt-000000000001.parquet"]
    assert unfinished_uploads(s3_bucket) == []
    data = s3fs_client().cat_file(f"{s3_bucket[5:]}/ds/{shard_rel}")
    assert len(data) > 10 << 20
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
    assert names[:3] == [f"{manifest[0]['key']}.assistant.flac", f"{manifest[0]['key']}.json",
                         f"{manifest[0]['key']}.user.flac"] and len(names) == 3 * len(manifest)
    assert verify_output(layout) == []


@pytest.mark.parametrize("threshold_mb", [0, 8])
def test_a_failed_shard_on_s3_leaves_no_object_and_no_upload(s3_bucket, threshold_mb):
    layout = Layout(f"{s3_bucket}/ds", {"multipart_threshold_mb": threshold_mb})
    good, bad = rows(2)
    bad["turns"][1]["audio_flac"] = 12345
    with pytest.raises(TypeError, match="assistant.flac is int"):
        write_shard(layout, "shard-rf-000000000001", [good, bad], "en", "train", ["t"])
    assert layout.store.list_files() == [] and unfinished_uploads(s3_bucket) == []


def test_a_killed_writer_s_upload_is_aborted_on_restart_and_a_foreign_one_is_not(s3_bucket):
    """What `kill -9` of a shard writer mid-upload leaves: an upload that was started, sent parts, and never
    completed. The restart cleanup aborts it (an own name inside a marked output) and lists it; a multipart
    upload of someone else's file under the same prefix is left alone."""
    store = Store(f"{s3_bucket}/ds", {"multipart_threshold_mb": 0})  # even a small tar as a multipart upload
    claim_output(store, "ds")
    killed = S3MultipartUpload(store, "data/en/train/shard-rk-000000000001.tar")
    killed.write(b"x" * 1000)
    killed.flush_parts()  # the process dies here: no complete, no abort
    theirs = S3MultipartUpload(store, "data/en/train/holiday-photos.tar")
    theirs.write(b"y" * 10)
    theirs.flush_parts()
    assert sorted(u for u in unfinished_uploads(s3_bucket)) == ["ds/data/en/train/holiday-photos.tar",
                                                                 "ds/data/en/train/shard-rk-000000000001.tar"]
    assert any("upload started and never completed" in p for p in verify_output(Layout(store)))
    assert Layout(store).clean_unfinished() == [f"{s3_bucket}/ds/data/en/train/shard-rk-000000000001.tar"]
    assert unfinished_uploads(s3_bucket) == ["ds/data/en/train/holiday-photos.tar"]
    assert store.list_files() == [".speechchat-output.json"]  # the aborted upload never became an object


def test_inputs_on_s3_are_cached_per_node_and_fetched_again_only_when_changed(s3_bucket, tmp_path, monkeypatch):
    from pipeline.io.inputs import local_pool_file

    monkeypatch.setenv("SPEECHCHAT_CACHE_DIR", str(tmp_path / "cache"))
    store = Store(f"{s3_bucket}/pools")
    speaker = {"speaker_id": "s1", "language": "en", "backend": "xtts", "gender": "female", "source": "test",
               "license": "cc-by-4.0", "references": [{"path": "clips/s1.wav", "duration_s": 3.0, "sample_rate": 16000}]}
    store.write_bytes("en.jsonl", (json.dumps(speaker) + "\n").encode())
    store.write_bytes("clips/s1.wav", b"RIFF-one")
    local = local_pool_file(f"{s3_bucket}/pools/en.jsonl")
    assert local.is_file() and local.parent.is_relative_to(tmp_path / "cache")
    assert (local.parent / "clips/s1.wav").read_bytes() == b"RIFF-one"  # the clip beside its manifest
    first = local.stat().st_mtime_ns
    assert local_pool_file(f"{s3_bucket}/pools/en.jsonl") == local and local.stat().st_mtime_ns == first  # cached
    store.write_bytes("clips/s1.wav", b"RIFF-two!")
    local_pool_file(f"{s3_bucket}/pools/en.jsonl")
    assert (local.parent / "clips/s1.wav").read_bytes() == b"RIFF-two!"  # changed object: fetched again
    store.write_bytes("src/a.jsonl", b'{"q": 1}\n')
    store.write_bytes("src/sub/b.jsonl", b'{"q": 2}\n')
    folder = cached_copy(f"{s3_bucket}/pools/src")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jsonl")) == ["a.jsonl", "sub/b.jsonl"]


def test_storage_errors_name_the_location_and_hold_no_credential(s3_endpoint, monkeypatch):
    with pytest.raises(OSError) as err:
        Store("s3://no-such-bucket-speechchat/ds").write_bytes("x", b"1")
    assert "s3://no-such-bucket-speechchat/ds/x" in str(err.value)
    assert FAKE_AWS_KEY_ID not in str(err.value) and FAKE_AWS_SECRET not in str(err.value)
    # what botocore's messages can carry (the key ID in a signature error, a presigned query): scrubbed
    text = (f"SignatureDoesNotMatch: Credential={FAKE_AWS_KEY_ID}/20260101/us-east-1/s3/aws4_request, "
            f"secret {FAKE_AWS_SECRET}, other key AKIAABCDEFGHIJKLMNOP, X-Amz-Signature=abc123&x=1")
    cleaned = scrub_credentials(text)
    assert FAKE_AWS_KEY_ID not in cleaned and FAKE_AWS_SECRET not in cleaned and "AKIAABCDEFGHIJKLMNOP" not in cleaned
    assert "abc123" not in cleaned and "SignatureDoesNotMatch" in cleaned
    store = Store("s3://bucket/ds")

    def boom(*a, **k):
        raise RuntimeError(f"denied for {FAKE_AWS_KEY_ID}:{FAKE_AWS_SECRET}")

    monkeypatch.setattr(store, "_fs", type("FS", (), {"find": boom})())  # an error carrying the keys, as raised
    with pytest.raises(StorageError) as err:
        store.list_files()
    assert "list s3://bucket/ds" in str(err.value) and FAKE_AWS_KEY_ID not in str(err.value)
    assert FAKE_AWS_SECRET not in str(err.value)


def test_a_storage_section_names_env_vars_and_never_holds_values(s3_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("MY_S3_KEY", FAKE_AWS_KEY_ID)
    monkeypatch.setenv("MY_S3_SECRET", FAKE_AWS_SECRET)
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", ["storage.access_key_id_env=MY_S3_KEY",
                                                          "storage.secret_access_key_env=MY_S3_SECRET"],
                      f"{s3_bucket}/ds")
    store = Layout(cfg.output_location(), cfg.storage.env_names()).store
    store.write_bytes("x.json", b"{}")
    assert store.storage_options() == {"key": FAKE_AWS_KEY_ID, "secret": FAKE_AWS_SECRET}
    assert cfg.storage.env_names() == {"access_key_id": "MY_S3_KEY", "secret_access_key": "MY_S3_SECRET",
                                       "part_size_mb": 8, "multipart_threshold_mb": 8}
    import pickle

    blob = pickle.dumps(store)  # what Ray sends to a worker on another node
    assert FAKE_AWS_KEY_ID.encode() not in blob and FAKE_AWS_SECRET.encode() not in blob
    assert pickle.loads(blob).read_bytes("x.json") == b"{}"
    from pipeline.config import dump_resolved

    assert FAKE_AWS_SECRET not in dump_resolved(cfg) and "MY_S3_SECRET" in dump_resolved(cfg)
    with pytest.raises(ConfigError, match="is not an environment variable name"):
        load_config(REPO_ROOT / "configs/smoke.yaml", [f"storage.secret_access_key_env={FAKE_AWS_SECRET}"])


def test_parquet_and_text_cache_read_back_from_s3(s3_bucket):
    from pipeline.io.text_cache import cached_ids, cached_rows, write_part

    layout = Layout(f"{s3_bucket}/ds")
    generated = [{**r, "turns": r["turns"]} for r in rows(2)]
    write_part(layout, "rt", generated)
    assert cached_rows(layout) == 2 and len(cached_ids(layout)) == 2
    layout.write_parquet("rejects/part-rt-000000000001.parquet", pa.table({"conversation_id": ["a", "b"]}))
    assert layout.read_table(layout.reject_parts()[0]).num_rows == 2


def test_everything_the_shard_stage_writes_goes_to_s3_and_reads_back(s3_bucket):
    """Duplex shards and their parts, near-duplicate signatures, rejects: all in the bucket through the Store;
    verify-output and the readers (resume set, signatures, duplex listing) take them from there; a duplex tar
    and part whose main shard never got its part are removed on restart, as on a local disk."""
    from pipeline.config import DuplexConfig
    from pipeline.io.near_dup_state import read_signatures
    from pipeline.stages.duplex import DuplexStage
    from pipeline.stages.shard import ShardStage

    layout = Layout(f"{s3_bucket}/ds")
    claim_output(layout.store, "ds")
    duplex = DuplexStage(DuplexConfig(enabled=True, pause_detector="energy"))  # silero-vad would be a model
    stage = ShardStage(layout, "rv", ["t"], signature_settings="s1")
    convs = [conversation(1, 2), conversation(2, 1), conversation(3, 1), conversation(4, 1, rejected=True)]
    for i, c in enumerate(convs):
        c["near_dup_signature"] = [i + 1] * 4
    stage(duplex(rows_to_table(convs[:2])))
    stage(duplex(rows_to_table(convs[2:])))
    objects = all_objects(layout.store.url)
    assert len([k for k in objects if k.startswith("data/en/duplex/train/shard-")]) == 2
    assert len([k for k in objects if k.startswith("manifest/duplex/shard-")]) == 2
    assert [k for k in objects if k.startswith("state/near_dup/")] and [k for k in objects if k.startswith("rejects/")]
    assert verify_output(layout) == []
    ids, signatures = read_signatures(layout, "s1", exclude=layout.rejected_ids())
    assert sorted(ids) == sorted(c["conversation_id"] for c in convs[:3]) and signatures.shape == (3, 4)
    assert len(layout.done_ids()) == 4 and len(layout.duplex_shards()) == 2
    # a crash between the duplex commit and the main shard's part: the duplex pair alone is unfinished
    [tar] = [k for k in objects if k.startswith("data/en/duplex/train/")][:1]
    orphan = tar.replace(tar.rsplit("/", 1)[1], "shard-rv-0000000000aa.tar")
    layout.store.write_bytes(orphan, objects[tar])
    layout.store.write_bytes("manifest/duplex/shard-rv-0000000000aa.parquet", b"part")
    assert any("no duplex manifest part" in p or "without the main manifest part" in p for p in verify_output(layout))
    assert sorted(layout.rel(p) for p in layout.clean_unfinished()) == [
        orphan, "manifest/duplex/shard-rv-0000000000aa.parquet"]
    assert verify_output(layout) == []


def test_publish_streams_an_s3_output_to_the_hub_standin(s3_bucket, monkeypatch, tmp_path):
    """`publish --out s3://...`: the files go from the bucket into the commit (ranged reads, nothing staged)."""
    from conftest import FAKE_HF_TOKEN
    from hub_standin import online_standin

    from pipeline.config import dump_resolved
    from pipeline.main import main
    from pipeline.stages.shard import ShardStage

    out = f"{s3_bucket}/ds"
    layout = Layout(out)
    claim_output(layout.store, "ds")
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", [], out)
    ShardStage(layout, "rp", cfg.license_tags)(rows_to_table([conversation(1, 2), conversation(2, 1, rejected=True)]))
    layout.write_bytes("config.yaml", dump_resolved(cfg).encode())
    with online_standin(monkeypatch, tmp_path, FAKE_HF_TOKEN) as hub:
        assert main(["publish", "--config", str(REPO_ROOT / "configs/smoke.yaml"), "--out", out,
                     "--repo", "acme/from-s3"]) == 0
        files = hub.files("acme/from-s3")
    objects = all_objects(out)
    sent = [k for k in objects if k.startswith(("data/", "manifest/", "rejects/"))]
    assert sent and all(files[k] == objects[k] for k in sent) and "README.md" in files
    assert not any(k.startswith(("state/", "text/", ".")) for k in files)
