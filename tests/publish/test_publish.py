"""`speechchat publish` against a local stand-in for the Hub API (tests/hub_standin.py, on 127.0.0.1).

The Hub itself cannot be reached from tests, so huggingface_hub is pointed at the stand-in with
HF_ENDPOINT (read by `publish` at call time) and Xet is switched off (see hub_standin's docstring): the
client code that runs is huggingface_hub's own create_repo / list_repo_tree / upload_folder ->
create_commit -> preupload -> LFS batch + PUT -> ndjson commit. Output folders come from the real shard
writer (test_card.build_output) and, in the integration test, from a real small run.
"""

import hashlib
import json
import shutil
import tarfile

import pytest
import yaml
from conftest import FAKE_HF_TOKEN, FAKE_OPENAI_KEY
from hub_standin import online_standin
from proc import run as run_proc
from test_card import build_output, conversation, front_matter

from pipeline.config import REPO_ROOT, dump_resolved, load_config
from pipeline.io.layout import Layout
from pipeline.main import main
from pipeline.publish.hub import is_uploaded_path, scrub
from pipeline.schema import rows_to_table
from pipeline.stages.shard import ShardStage

SMOKE = str(REPO_ROOT / "configs/smoke.yaml")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with online_standin(monkeypatch, tmp_path, FAKE_HF_TOKEN) as standin:
        monkeypatch.setenv("HF_TOKEN", FAKE_HF_TOKEN)
        yield standin


def make_folder(root, languages=("en",), rejects=True):
    """A finished output folder plus what a run leaves beside the dataset: config, state, text cache."""
    build_output(root, languages=languages, rejects=rejects)
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", [], root)
    (root / "config.yaml").write_text(dump_resolved(cfg))
    (root / "state").mkdir(exist_ok=True)
    (root / "state/runs.jsonl").write_text('{"run_id": "rcard"}\n')
    (root / "state/llm_server.log").write_text("llama.cpp server log\n")
    (root / "text").mkdir(exist_ok=True)
    (root / "text/part-rcard-0001.parquet").write_bytes(b"PAR1 not really\n")
    (root / ".cache").mkdir(exist_ok=True)
    (root / ".cache/notes").write_text("hidden\n")
    (root / "notes.txt").write_text("my notes\n")
    return root


def publish(root, repo, *extra):
    return main(["publish", "--config", SMOKE, "--out", str(root), "--repo", repo, *extra])


def expected_upload(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and is_uploaded_path(p.relative_to(root).as_posix())}


def test_the_allow_list():
    part = "r1-0123456789ab"
    for rel in ("README.md", "report.html", "stats.json", "config.yaml", "config.zh.yaml", "config.en-zh.yaml",
                f"data/en/train/shard-{part}.tar", f"manifest/shard-{part}.parquet", f"rejects/part-{part}.parquet",
                f"data/en/duplex/train/shard-{part}.tar", f"manifest/duplex/shard-{part}.parquet"):
        assert is_uploaded_path(rel), rel
    for rel in ("state/runs.jsonl", f"text/part-{part}.parquet", f"data/en/train/shard-{part}.tar.tmp", "README.md.tmp",
                "data/en/shard.tar", "data/en/train/sub/shard.tar", ".cache/huggingface/x", "data/.x/train/a.tar",
                "notes.txt", "manifest/x.parquet.tmp", "x/README.md", "config.yaml.tmp", "state/config.zh.yaml",
                "data/en/train/holiday-photos.tar", "manifest/notes.parquet", "rejects/mine.parquet",
                f"state/near_dup/shard-{part}.parquet"):  # a user's files in the folder and the resume state stay
        assert not is_uploaded_path(rel), rel


def test_publish_uploads_the_dataset_files_and_a_second_publish_uploads_nothing(tmp_path, hub, capsys):
    root = make_folder(tmp_path / "speechchat-smoke")
    assert publish(root, "acme/spoken-chat", "--private") == 0
    out = capsys.readouterr()
    files = hub.files("acme/spoken-chat")
    want = expected_upload(root)
    # exactly the dataset: every shard, manifest and rejects part, the card, report, stats and config
    assert set(files) == want
    assert {"README.md", "report.html", "stats.json", "config.yaml"} <= want
    assert sum(p.startswith("data/") for p in want) == len(Layout(root).shards()) == 3
    assert not any(p.startswith(("state/", "text/", ".")) or p.endswith(".tmp") or p == "notes.txt" for p in files)
    for path, data in files.items():
        assert data == (root / path).read_bytes(), path
    # tars and parquet went through LFS (PUT to the pre-signed URL), the rest inline in the commit
    assert set(hub.lfs) == {hashlib.sha256((root / p).read_bytes()).hexdigest() for p in want
                            if p.endswith((".tar", ".parquet"))}
    assert hub.repos["acme/spoken-chat"].private and len(hub.repos["acme/spoken-chat"].commits) == 1
    assert not hub.unauthorized and all(m != "GET" or "/api/datasets/" in p for m, p in hub.requests
                                        if "agent-harnesses" not in p)
    # the card on the Hub names the repo and its configs point at the uploaded shards
    meta, body = front_matter(root / "README.md")
    assert 'load_dataset("acme/spoken-chat", "en", split="train")' in body
    for entry in meta["configs"][0]["data_files"]:
        assert any(p.startswith(entry["path"].rsplit("/", 1)[0] + "/") and p.endswith(".tar") for p in files)
    assert f"uploaded {len(want)} file(s); 0 already on the Hub" in out.out
    assert "kept local (never uploaded): .cache/ (1), notes.txt, state/ (2), text/ (1)" in out.out
    assert FAKE_HF_TOKEN not in out.out + out.err
    assert all(FAKE_HF_TOKEN.encode() not in d and FAKE_OPENAI_KEY.encode() not in d for d in files.values())

    # the same folder again: the Hub already has every file, so nothing is sent and nothing committed
    before = len(hub.requests)
    assert publish(root, "acme/spoken-chat") == 0
    again = hub.requests[before:]
    assert not [r for r in again if r[0] == "PUT" or "/commit/" in r[1] or "/preupload/" in r[1]
                or "lfs/objects" in r[1]], again
    assert len(hub.repos["acme/spoken-chat"].commits) == 1
    assert f"uploaded 0 file(s); {len(want)} already on the Hub unchanged" in capsys.readouterr().out
    assert not (root / ".publish-staging").exists()

    # a shard on the Hub that the folder does not have is reported (the card's glob would load it), not deleted
    hub.repos["acme/spoken-chat"].branches["main"]["data/en/train/shard-r0-0000000000a1.tar"] = b"stale"
    assert publish(root, "acme/spoken-chat") == 0
    assert "1 data file(s) on the Hub are not in" in capsys.readouterr().out
    assert "data/en/train/shard-r0-0000000000a1.tar" in hub.files("acme/spoken-chat")


def test_an_interrupted_publish_resumes_without_resending_uploaded_objects(tmp_path, hub, capsys):
    root = make_folder(tmp_path / "speechchat-smoke")
    hub.fail_next_commit = True
    assert publish(root, "acme/resume") == 1
    err = capsys.readouterr().err
    assert "upload to acme/resume failed" in err and "run the same command again" in err
    lfs_files = [p for p in expected_upload(root) if p.endswith((".tar", ".parquet"))]
    assert hub.files("acme/resume") == {} and len(hub.lfs) == len(lfs_files) == 7  # objects arrived, commit not
    puts = hub.count("PUT", "/lfs-upload/")
    assert publish(root, "acme/resume") == 0
    assert hub.count("PUT", "/lfs-upload/") == puts  # the LFS batch answered "already there" for each
    assert set(hub.files("acme/resume")) == expected_upload(root)


def test_the_script_entry_point_publishes_with_xet_switched_off_by_environment(tmp_path, hub):
    import os
    import sys

    root = make_folder(tmp_path / "speechchat-smoke")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
           "HF_ENDPOINT": hub.url, "HF_TOKEN": FAKE_HF_TOKEN, "HF_HOME": str(tmp_path / "hf-home")}
    res = run_proc([sys.executable, "pipeline/main.py", "publish", "--config", SMOKE, "--out", str(root),
                          "--repo", "acme/script"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert set(hub.files("acme/script")) == expected_upload(root)
    assert not any("xet" in path for _, path in hub.requests)
    assert FAKE_HF_TOKEN not in res.stdout + res.stderr


def test_a_branch_is_created_and_committed_to(tmp_path, hub):
    root = make_folder(tmp_path / "speechchat-smoke")
    assert publish(root, "acme/branchy", "--revision", "v1") == 0
    assert set(hub.files("acme/branchy", "v1")) == expected_upload(root)
    assert hub.files("acme/branchy", "main") == {}
    assert not hub.repos["acme/branchy"].private


def test_a_folder_failing_verify_output_is_refused_before_any_request(tmp_path, hub, capsys):
    root = make_folder(tmp_path / "speechchat-smoke")
    tar = Layout(root).shards()[0]
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF  # one flipped byte inside the first member
    tar.write_bytes(bytes(data))
    (root / "data/en/train/shard-r0-0000000000a2.tar.tmp").write_bytes(b"partial")
    assert publish(root, "acme/broken") == 1
    err = capsys.readouterr().err
    assert "fails verify-output, refusing to publish" in err
    assert f"{tar.name}: sha256 differs from the manifest" in err and "leftover temp file" in err
    assert hub.requests == []


def test_a_language_with_only_rejects_is_refused(tmp_path, hub, capsys):
    root = make_folder(tmp_path / "speechchat-smoke")
    stage = ShardStage(root, "rzh", [])
    stage(rows_to_table([conversation("zh", 20 + i, 2, reject=("verify", "asr_error_rate_above_threshold"))
                         for i in range(3)]))
    assert publish(root, "acme/half") == 1
    err = capsys.readouterr().err
    assert "language 'zh': 3 conversation(s) rejected and none kept (asr_error_rate_above_threshold 3)" in err
    assert hub.requests == []


def test_a_secret_in_a_file_that_would_go_up_is_refused_and_not_printed(tmp_path, hub, capsys):
    root = make_folder(tmp_path / "speechchat-smoke")
    (root / "config.yaml").write_text(dump_resolved(load_config(REPO_ROOT / "configs/smoke.yaml", [], root))
                                      + f"# pasted by mistake: {FAKE_OPENAI_KEY}\n")
    (root / "state/secret.txt").write_text(FAKE_HF_TOKEN)  # stays local, so it is no reason to refuse
    assert publish(root, "acme/leaky") == 1
    err = capsys.readouterr().err
    assert "config.yaml: holds the value of a secret" in err and "state/secret.txt" not in err
    assert FAKE_OPENAI_KEY not in err and hub.requests == []


def test_server_errors_never_show_the_token(tmp_path, hub, capsys):
    root = make_folder(tmp_path / "speechchat-smoke")
    hub.echo_auth_on_create = True  # a server that puts the request headers in its error message
    assert publish(root, "acme/echo") == 1
    err = capsys.readouterr().err
    assert "upload to acme/echo failed" in err and "500" in err
    assert FAKE_HF_TOKEN not in err and "***" in err


def test_no_token_and_bad_repo_ids_are_clear_errors(tmp_path, hub, monkeypatch, capsys):
    root = make_folder(tmp_path / "speechchat-smoke")
    assert publish(root, "not-a-repo-id") == 1
    assert "expected <namespace>/<name>" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved token either
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home/token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home/stored"))
    assert publish(root, "acme/x") == 1
    assert "no Hugging Face token: set HF_TOKEN" in capsys.readouterr().err
    assert hub.requests == []


def test_dry_run_lists_without_network(tmp_path, hub, capsys):
    root = make_folder(tmp_path / "speechchat-smoke")
    assert publish(root, "acme/dry", "--dry-run") == 0
    assert f"would upload {len(expected_upload(root))} file(s)" in capsys.readouterr().out
    assert hub.requests == []


def test_the_card_takes_the_voices_licences_from_the_speaker_pool(tmp_path):
    from pipeline.publish.card import card_resolution, speaker_license_tags
    from pipeline.voices.pool import Speaker

    def spk(speaker_id, source, lic, backend="xtts"):
        return Speaker(speaker_id=speaker_id, language="en", source=source, license=lic, backend=backend,
                       speaker_name="x")

    pool = [spk("en-spk0", "LibriTTS-R train-clean-360", "CC-BY-4.0"),
            spk("en-spk1", "AISHELL-3", "apache-2.0"),
            spk("en-spk2", "LibriTTS-R train-clean-100", "cc-by-4.0"),
            spk("unused", "Emilia", "cc-by-nc-4.0")]
    assert speaker_license_tags(pool, ["en-spk0", "en-spk1", "en-spk9"]) == [
        "speakers:LibriTTS-R train-clean-360:CC-BY-4.0", "speakers:AISHELL-3:apache-2.0",
        "speakers:speaker en-spk9 (not in the speaker pool)"]
    root = tmp_path / "ds"
    cfg_dict, _ = build_output(root, languages=("en",), rejects=False)
    cfg_dict["license_tags"] = ["text:generated-by-SmolLM2-135M-Instruct:apache-2.0"]
    # the folder's user voices are en-spk0..2 and the assistant en-assistant, which this pool lacks
    res = card_resolution(root, cfg_dict, pool)
    names = {c.name for c in res.components}
    assert {"LibriTTS-R", "AISHELL-3"} <= names and "Emilia" not in names
    assert res.license == "unknown" and any("en-assistant" in w for w in res.warnings)
    pool.append(spk("en-assistant", "XTTS-v2 built-in speaker", "cpml"))
    res = card_resolution(root, cfg_dict, pool)
    # XTTS-v2's CPML now applies too, but the samples' Piper joe voice (lessac data) is stricter still
    assert (res.license, res.license_name) == ("other", "lessac-research-only") and not res.commercial_use
    assert "XTTS-v2" in {c.name for c in res.components}
    assert any("Coqui Public Model Licence" in w for w in res.warnings)


def test_scrub():
    text = "headers {'authorization': 'Bearer hf_abcdefghijklmnop', 'x': 1} token=hf_zzzzzzzzzzzzzzzz sk-123456789"
    clean = scrub(text, ["s3cr3t-value"])
    assert "hf_abcdefghijklmnop" not in clean and "hf_zzzzzzzzzzzzzzzz" not in clean and "sk-123456789" not in clean
    assert scrub("a s3cr3t-value b", ["s3cr3t-value"]) == "a *** b"


@pytest.fixture(scope="module")
def valid_llm():
    """The replay stub answering only with recorded SmolLM2 answers the parser accepts: the claim here is about
    loading and publishing what a run kept, so the run must keep something on every machine."""
    from llm_stub import LLMStub

    with LLMStub(valid_only=True) as base_url:
        yield base_url


@pytest.mark.integration
def test_a_small_run_loads_through_its_card_and_publishes(tmp_path_factory, ray_session, valid_llm, hub, capsys):
    """A real run (the LLM replay stub, Piper, faster-whisper on a local Ray), loaded back with `datasets` through
    the card's configs, published to the stand-in, and loaded again from what the stand-in received."""
    datasets = pytest.importorskip("datasets")
    import numpy as np
    from conftest import small_config

    from pipeline.audio import decode_audio
    from pipeline.run.runner import run

    out = tmp_path_factory.mktemp("pub-e2e") / "speechchat-smoke"
    cfg = small_config(out, "plan.num_conversations=2", f"llm.base_url={valid_llm}", "llm.max_tokens=500",
                       "shard.splits={train: 1.0}")
    stats = run(cfg)
    if not stats["totals"]["conversations_kept"]:
        pytest.fail(f"the small run kept nothing: {stats['rejections']}")
    ds = datasets.load_dataset(str(out), "en", split="train", cache_dir=str(tmp_path_factory.mktemp("hf-cache")))
    assert ds.num_rows == stats["totals"]["exchanges"]
    tars = {}
    for tar in Layout(out).shards():
        with tarfile.open(tar) as tf:
            tars.update({m.name: tf.extractfile(m).read() for m in tf})
    for row in ds:
        assert row["json"]["key"] == row["__key__"] and row["json"]["language"] == "en"
        for side in ("user", "assistant"):
            audio = row[f"{side}.flac"]
            decoded = audio.get_all_samples() if hasattr(audio, "get_all_samples") else None
            samples = decoded.data.numpy()[0] if decoded is not None else np.asarray(audio["array"])
            reference, rate = decode_audio(tars[f"{row['__key__']}.{side}.flac"])
            assert rate == row["json"][side]["sample_rate"] and len(samples) == len(reference) > 1000
            np.testing.assert_allclose(samples, reference, atol=1e-4)
    # the card names the voice's corpus from the speaker pool, and the licence it implies
    meta, body = front_matter(out / "README.md")
    assert meta["license"] == "other" and meta["license_name"] == "lessac-research-only"
    assert "joe" in body and "(state/" not in body

    assert main(["publish", "--config", SMOKE, "--out", str(out), "--repo", "acme/smoke", "plan.num_conversations=2"]) == 0
    files = hub.files("acme/smoke")
    assert set(files) == expected_upload(out) and not any(p.startswith(("state/", "text/")) for p in files)
    mirror = tmp_path_factory.mktemp("mirror") / "speechchat-smoke"
    for path, data in files.items():
        (mirror / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / path).write_bytes(data)
    again = datasets.load_dataset(str(mirror), "en", split="train", cache_dir=str(tmp_path_factory.mktemp("hf2")))
    assert sorted(again["__key__"]) == sorted(ds["__key__"])
    saved = json.loads(files["stats.json"])
    assert saved["totals"] == json.loads((out / "stats.json").read_text())["totals"]
    assert yaml.safe_load(files["config.yaml"])["dataset"] == "speechchat-smoke"
    assert FAKE_HF_TOKEN not in capsys.readouterr().out
    shutil.copy(out / "README.md", tmp_path_factory.getbasetemp() / "smoke-card.md")  # for a human look
