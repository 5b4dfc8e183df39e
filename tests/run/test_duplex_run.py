"""A real run with duplex.enabled and augment.enabled (llama.cpp, Piper, faster-whisper, local Ray): the duplex
subset and the augmented samples read back with webdataset and `datasets`, verify-output passes, and a crash
between the duplex commit and the main manifest part resumes with nothing lost or doubled."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import webdataset as wds
from conftest import small_config

from pipeline.audio import decode_audio
from pipeline.io.layout import Layout
from pipeline.io.verify_output import verify_output
from pipeline.run.runner import run
from pipeline.schema import DUPLEX_FIELDS, DUPLEX_SEGMENT_FIELDS

pytestmark = pytest.mark.integration

OVERRIDES = ("plan.num_conversations=3", "plan.exchanges.en.max=2", "llm.max_tokens=400", "shard.conversations_per_shard=2",
             # SmolLM2's turns are short: low thresholds and certain events, so every path of the wiring is taken
             "duplex.enabled=true", "duplex.backchannel_rate=1.0", "duplex.interruption_rate=1.0",
             "duplex.overlap_rate=0.3", "duplex.backchannel_min_turn_s=1.0", "duplex.backchannel_min_pause_s=0.12",
             "duplex.interruption_min_turn_s=1.5", "duplex.interruption_min_spoken_s=0.5",
             "duplex.interruption_min_unspoken_s=0.3", "augment.enabled=true", "augment.noise_prob=1.0", "augment.reverb_prob=0.5",
             "augment.telephone_prob=0.3", "augment.codec_prob=0.3", "augment.rt60_max_s=0.4")


@pytest.fixture(scope="module")
def made(tmp_path_factory, ray_session, llm_base_url):
    out = tmp_path_factory.mktemp("duplex-run") / "ds"
    cfg = small_config(out, *OVERRIDES, f"llm.base_url={llm_base_url}")
    stats = run(cfg)
    assert stats["last_run"]["kept"] >= 1, stats["last_run"]["rejected_by_reason"]
    return cfg, out


def _kept_ids(layout: Layout) -> set[str]:
    return {r["conversation_id"] for p in layout.manifest_parts() for r in pq.read_table(p).to_pylist()}


def test_every_kept_conversation_has_one_duplex_timeline_that_verify_output_accepts(made):
    _, out = made
    layout = Layout(out)
    assert verify_output(out) == []
    samples = [s for tar in layout.duplex_shards() for s in wds.WebDataset(str(tar), shardshuffle=False)]
    assert {s["__key__"] for s in samples} == _kept_ids(layout)
    kinds = set()
    for s in samples:
        timeline = json.loads(s["json"])
        # `datasets` drops JSON keys the card does not declare: the declared fields are exactly the written ones
        assert list(timeline) == [name for name, _, _ in DUPLEX_FIELDS]
        assert [list(g) for g in timeline["segments"]] == [[n for n, _, _ in DUPLEX_SEGMENT_FIELDS]] * len(timeline["segments"])
        recipe_fields = dict((n, k) for n, k, _ in DUPLEX_FIELDS)["recipe"]
        assert {n: sorted(v) if isinstance(v, dict) else None for n, v in timeline["recipe"].items()} == {
            n: sorted(f for f, _, _ in k) if isinstance(k, list) else None for n, k, _ in recipe_fields}
        audio, rate = sf.read(io.BytesIO(s["duplex.flac"]), dtype="float32", always_2d=True)
        assert audio.shape[1] == 2 and rate == 16000 and timeline["conversation_id"] == s["__key__"]
        turns = [g for g in timeline["segments"] if g["kind"] != "backchannel"]
        assert [g["channel"] for g in sorted(turns, key=lambda g: g["turn"])][:2] == [0, 1]
        for g in timeline["segments"]:
            kinds.add(g["kind"])
            chunk = audio[round(g["start"] * rate):round(g["end"] * rate), g["channel"]]
            assert np.sqrt(np.mean(chunk ** 2)) > 0.01, g  # the segment's channel carries its speech
        if any(g["kind"] == "interrupted_turn" for g in turns):
            cut = next(g for g in turns if g["kind"] == "interrupted_turn")
            assert cut["unspoken_text"] and cut["cut_s"] > 0 and cut["interrupted_at"] < cut["end"]
    # SmolLM2's few short turns leave few pauses: at least one event beyond plain turns (the stage tests
    # in tests/stages/test_render_stages.py take each path on long Piper turns)
    assert "turn" in kinds and kinds & {"backchannel", "interrupted_turn"}, kinds


def test_user_audio_is_augmented_with_its_recipe_and_the_clean_audio_kept(made):
    _, out = made
    layout = Layout(out)
    augmented = 0
    for tar in layout.shards():
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(s["json"])
            assert meta["schema_version"] == 3
            recipe = meta["user"]["augmentation"]
            assert meta["assistant"]["augmentation"]["seed"] == -1  # the assistant stays clean
            assert recipe["seed"] >= 0 and json.loads(recipe["recipe"])["seed"] == recipe["seed"]
            if not recipe["kinds"]:
                continue
            augmented += 1
            assert "noise" in recipe["kinds"] and 5 <= recipe["snr_db"] <= 25
            noisy, _ = decode_audio(s["user.flac"])
            clean, _ = decode_audio(s["user_clean.flac"])
            assert noisy.shape == clean.shape and not np.allclose(noisy, clean, atol=1e-3)
            # verification scored the clean audio; DNSMOS of the augmented one is recorded beside it
            assert meta["user"]["error_rate"] <= 0.2 and 1 <= recipe["dnsmos_ovrl"] <= 5
            assert recipe["dnsmos_bak"] < meta["user"]["dnsmos_bak"] + 0.3
    assert augmented >= 1


def test_the_duplex_subset_loads_through_the_card_with_datasets(made, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, out = made
    card = (out / "README.md").read_text()
    assert "config_name: en-duplex" in card and "data/en/duplex/train/*.tar" in card
    ds = datasets.load_dataset(str(out), "en-duplex", split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == len(_kept_ids(Layout(out)))
    assert ds.features["json"]["segments"].feature["start"] == datasets.Value("float64")
    row = ds[0]
    assert row["json"]["conversation_id"] == row["__key__"] and row["json"]["segments"]
    audio = row["duplex.flac"]
    decoded = audio.get_all_samples() if hasattr(audio, "get_all_samples") else None
    channels = decoded.data.shape[0] if decoded is not None else np.asarray(audio["array"]).shape[0]
    assert channels == 2
    main = datasets.load_dataset(str(out), "en", split="train", cache_dir=str(tmp_path / "hf"))
    assert "user_clean.flac" in main.features and main[0]["json"]["user"]["augmentation"]["seed"] >= 0


def test_the_training_loader_reads_the_duplex_subset(made):
    from pipeline.training.loader import duplex_conversations, find_duplex_shards

    _, out = made
    conversations = list(duplex_conversations(find_duplex_shards(out, "en", "train")))
    assert {c["conversation_id"] for c in conversations} == _kept_ids(Layout(out))
    for c in conversations:
        assert c["audio"].shape[1] == 2 and c["activity"].shape[0] == 2
        assert c["activity"][0].any() and c["activity"][1].any()


def test_a_crash_between_the_duplex_commit_and_the_main_manifest_resumes_exactly_once(made, tmp_path, llm_base_url):
    import shutil

    cfg, out = made
    crashed = tmp_path / "crashed"
    shutil.copytree(out, crashed)
    layout = Layout(crashed)
    kept_before = _kept_ids(layout)
    # the state a kill leaves after a shard's duplex tar and part are in place but before its main manifest part
    part = layout.manifest_parts()[0]
    lost = {r["conversation_id"] for r in pq.read_table(part).to_pylist()}
    part.unlink()
    assert (layout.duplex_manifest / part.name).is_file()
    assert any("duplex part without the main manifest part" in p for p in verify_output(crashed))
    stats = run(small_config(crashed, *OVERRIDES, f"llm.base_url={llm_base_url}"))
    assert verify_output(crashed) == []
    assert stats["last_run"]["kept"] + stats["last_run"]["rejected"] == len(lost)
    duplex_ids = [s["__key__"] for t in layout.duplex_shards() for s in wds.WebDataset(str(t), shardshuffle=False)]
    assert sorted(duplex_ids) == sorted(_kept_ids(layout)) and len(set(duplex_ids)) == len(duplex_ids)
    assert _kept_ids(layout) <= kept_before | lost and kept_before - lost <= _kept_ids(layout)
