"""End to end on a local Ray: real llama.cpp server, Piper, faster-whisper; shards read back two ways."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from conftest import FAKE_HF_TOKEN, FAKE_OPENAI_KEY, small_config

from pipeline.audio import decode_audio
from pipeline.io.layout import Layout
from pipeline.metrics import error_rate
from pipeline.run.runner import run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, ray_session, llm_base_url):
    out = tmp_path_factory.mktemp("e2e") / "ds"
    cfg = small_config(out, "plan.num_conversations=3", f"llm.base_url={llm_base_url}", "llm.max_tokens=500",
                       "shard.conversations_per_shard=2")
    stats = run(cfg)
    return cfg, out, stats


def test_every_planned_conversation_is_kept_or_rejected_with_a_reason(first_run):
    _, out, stats = first_run
    last = stats["last_run"]
    assert last["planned"] == 3 and last["kept"] + last["rejected"] == 3
    assert last["kept"] >= 1, last["rejected_by_reason"]
    rejects = [r for p in Layout(out).reject_parts() for r in pq.read_table(p).to_pylist()]
    assert len(rejects) == last["rejected"]
    assert all(r["reason"] and r["stage"] for r in rejects)
    saved = json.loads((out / "stats.json").read_text())
    assert saved["totals"]["conversations_kept"] == last["kept"]
    assert (out / "config.yaml").is_file() and (out / "state/runs.jsonl").is_file()


def test_shards_read_back_with_webdataset_and_audio_says_the_words(first_run):
    _, out, stats = first_run
    layout = Layout(out)
    samples = [s for tar in layout.shards() for s in wds.WebDataset(str(tar), shardshuffle=False)]
    manifest = [r for p in layout.manifest_parts() for r in pq.read_table(p).to_pylist()]
    assert len(samples) == len(manifest) == stats["totals"]["exchanges"] > 0
    assert {s["__key__"] for s in samples} == {m["key"] for m in manifest}
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["key"] == s["__key__"] and "." not in s["__key__"]
        u, u_rate = decode_audio(s["user.flac"])
        a, a_rate = decode_audio(s["assistant.flac"])
        assert u_rate == 16000 and a_rate == 22050
        assert abs(len(u) / u_rate - meta["user"]["duration_s"]) < 0.01
        assert meta["user"]["error_rate"] <= 0.2 and meta["assistant"]["error_rate"] <= 0.2
        assert meta["models"]["asr"].startswith("faster-whisper") and meta["models"]["tts"].startswith("piper-tts")
    # an independent ASR pass (a fresh model, beam search) agrees the user turn says its spoken text
    from faster_whisper import WhisperModel

    from pipeline.assets import whisper_tiny_en

    model = WhisperModel(str(whisper_tiny_en()), device="cpu", compute_type="int8")
    meta = json.loads(samples[0]["json"])
    u, _ = decode_audio(samples[0]["user.flac"])
    segments, _ = model.transcribe(u, language="en", beam_size=5)
    heard = " ".join(seg.text for seg in segments)
    assert error_rate(meta["user"]["spoken_text"], heard, "en") <= 0.2, (meta["user"]["spoken_text"], heard)


def test_shards_load_with_hf_datasets(first_run):
    datasets = pytest.importorskip("datasets")
    _, out, stats = first_run
    files = [str(p) for p in Layout(out).shards()]
    ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train")
    assert ds.num_rows == stats["totals"]["exchanges"]
    row = ds[0]
    assert row["json"]["language"] == "en" and row["json"]["user"]["sample_rate"] == 16000
    audio = row["user.flac"]
    samples = audio["array"] if isinstance(audio, dict) else audio.get_all_samples().data.numpy()
    assert np.asarray(samples).size > 1600


def test_rerun_adds_nothing_and_loses_nothing(first_run):
    cfg, out, stats = first_run
    layout = Layout(out)
    before = sorted(p.name for p in layout.shards()), sorted(p.name for p in layout.reject_parts())
    again = run(cfg)
    assert again["last_run"]["skipped_already_done"] == 3
    assert again["last_run"]["kept"] == again["last_run"]["rejected"] == 0
    assert (sorted(p.name for p in layout.shards()), sorted(p.name for p in layout.reject_parts())) == before
    assert again["totals"] == stats["totals"]
    from pipeline.io.verify_output import verify_output

    assert verify_output(out) == []  # whole and consistent after two runs into one folder


def test_no_secret_in_any_output_file(first_run):
    _, out, _ = first_run
    secrets = [FAKE_OPENAI_KEY.encode(), FAKE_HF_TOKEN.encode()]
    assert os.environ["OPENAI_API_KEY"] == FAKE_OPENAI_KEY
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        data = path.read_bytes()
        assert not any(s in data for s in secrets), path


def test_audio_is_remade_from_cached_text_without_the_llm(first_run, tmp_path):
    cfg, out, stats = first_run
    cached = [r for p in sorted((out / "text").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    generate_rejects = sum(n for reason, n in stats["rejections"].items() if reason.startswith("llm_"))
    assert len(cached) == 3 - generate_rejects and all(r["turns"] for r in cached)
    from pipeline.run.selection import StageSelection

    # the LLM address is dead: any LLM call would stop the run (LLMUnavailable)
    remake_cfg = small_config(tmp_path / "remake", "plan.num_conversations=3", "llm.base_url=http://127.0.0.1:9/v1")
    remade = run(remake_cfg, StageSelection.parse("tts,verify,shard"), text_from=out)
    last = remade["last_run"]
    assert last["planned"] == len(cached) and last["llm_requests"] == 0
    assert last["kept"] + last["rejected"] == len(cached)
    assert "generate/llm_unreachable" not in last["rejected_by_reason"]
    kept_before = {r["conversation_id"] for p in Layout(out).manifest_parts() for r in pq.read_table(p).to_pylist()}
    kept_now = {r["conversation_id"] for p in Layout(tmp_path / "remake").manifest_parts() for r in pq.read_table(p).to_pylist()}
    assert kept_now <= {r["conversation_id"] for r in cached} and kept_before
    assert kept_now, remade["last_run"]["rejected_by_reason"]  # the same text, spoken again, passes again


def test_text_only_run_caches_text_and_writes_no_audio(tmp_path, ray_session, llm_base_url):
    from pipeline.run.selection import StageSelection

    cfg = small_config(tmp_path / "t", "plan.num_conversations=2", f"llm.base_url={llm_base_url}", "llm.max_tokens=300",
                       "plan.exchanges.en.min=1", "plan.exchanges.en.max=1")
    stats = run(cfg, StageSelection.parse("generate"))
    last = stats["last_run"]
    assert last["text_only"] + last["rejected"] == 2 and last["kept"] == 0
    assert not Layout(tmp_path / "t").shards()
    cached = [r for p in sorted((tmp_path / "t/text").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(cached) == last["text_only"]
    again = run(cfg, StageSelection.parse("generate"))["last_run"]
    assert again["skipped_already_done"] == 2 and again["llm_requests"] == 0
