"""The augment and duplex stages (and the TTS stage's backchannels) on real Piper turns, without Ray."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
from duplex_corpus import corpus_cache, synthesize_corpus

from pipeline.audio import decode_audio, encode_flac, resample
from pipeline.config import AugmentConfig, DuplexConfig
from pipeline.schema import conversation_samples, duplex_sample, empty_turn, rows_to_table
from pipeline.stages.augment import AugmentStage
from pipeline.stages.duplex import DuplexStage
from pipeline.voices.pool import Speaker

JOE = Speaker(speaker_id="piper-en_US-joe-medium", language="en", source="test", license="test", backend="piper")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synthesize_corpus(corpus_cache(tmp_path_factory))


def _row(corpus, exchanges: int = 3) -> dict:
    turns = []
    for i in range(exchanges):
        for role in ("user", "assistant"):
            text, samples, rate, words = corpus[role][i]
            if role == "user":
                samples, rate = resample(samples, rate, 16000), 16000
            turn = empty_turn(role, text)
            turn.update(spoken_text=text, speaker_id=JOE.speaker_id, audio_flac=encode_flac(samples, rate),
                        sample_rate=rate, duration_s=samples.size / rate, asr_text=text, error_rate=0.0,
                        asr_words=[{"word": w, "start": a, "end": b} for w, a, b in words] if role == "assistant" else None)
            turns.append(turn)
    backchannels = [{"role": role, "text": text, "audio_flac": encode_flac(*clip), "sample_rate": clip[1]}
                    for role in ("user", "assistant") for text, clip in corpus["backchannel"].items()]
    return {"conversation_id": "c0nv", "language": "en", "split": "train", "topic": "t", "domain": "d",
            "scenario": "s", "persona": "p", "num_exchanges": exchanges, "text_digest": "x", "turns": turns,
            "backchannels": backchannels}


@pytest.mark.integration
def test_the_duplex_stage_renders_every_kind_from_the_row_it_is_given(corpus):
    stage = DuplexStage(DuplexConfig(backchannel_rate=1.0, interruption_rate=1.0, overlap_rate=0.5))
    out = stage(rows_to_table([_row(corpus)])).to_pylist()[0]
    assert out["reject_reason"] is None and out["backchannels"] is None  # used up
    timeline = json.loads(out["duplex_json"])
    assert {g["kind"] for g in timeline["segments"]} == {"turn", "backchannel", "interrupted_turn"}
    audio, rate = sf.read(io.BytesIO(out["duplex_flac"]), always_2d=True)
    assert audio.shape[1] == 2 and rate == 16000 and abs(audio.shape[0] / rate - timeline["duration_s"]) < 1e-3
    sample = duplex_sample(out)
    assert sample["__key__"] == "c0nv" and json.loads(sample["json"])["segments"] == timeline["segments"]
    again = stage(rows_to_table([_row(corpus)])).to_pylist()[0]
    assert again["duplex_flac"] == out["duplex_flac"]  # seeded by the conversation ID: a retry writes the same


@pytest.mark.integration
def test_a_silent_turn_is_a_recorded_rejection_not_a_crash(corpus):
    row = _row(corpus, 1)
    row["turns"][1]["audio_flac"] = encode_flac(np.zeros(8000, dtype=np.float32), 16000)
    out = DuplexStage(DuplexConfig())(rows_to_table([row])).to_pylist()[0]
    assert (out["reject_stage"], out["reject_reason"]) == ("duplex", "duplex_render_failed")
    assert "silent" in out["reject_details"]


@pytest.mark.integration
def test_the_augment_stage_replaces_user_audio_keeps_the_clean_and_records_the_recipe(corpus):
    cfg = AugmentConfig(noise_prob=1.0, reverb_prob=0.0, telephone_prob=0.0, codec_prob=0.0, gain_prob=0.0,
                        noise_kinds={"colored": 1.0})
    stage = AugmentStage(cfg, [JOE], ["en"], dnsmos=True, threads=1)
    row = _row(corpus, 2)
    before = [t["audio_flac"] for t in row["turns"]]
    out = stage(rows_to_table([row])).to_pylist()[0]
    for turn, original in zip(out["turns"], before):
        if turn["role"] == "assistant":
            assert turn["audio_flac"] == original and turn["augmentation"] is None  # the assistant stays clean
            continue
        recipe = json.loads(turn["augmentation"])
        assert turn["clean_audio_flac"] == original and turn["audio_flac"] != original
        noisy, _ = decode_audio(turn["audio_flac"])
        clean, _ = decode_audio(original)
        reference = clean * 10 ** (recipe.get("limit_db", 0.0) / 20)
        snr = 20 * np.log10(np.sqrt(np.mean(reference ** 2)) / np.sqrt(np.mean((noisy - reference) ** 2)))
        assert abs(snr - recipe["snr_db"]) < 1.0  # through FLAC's 16 bits too
        assert 1 <= recipe["dnsmos"]["ovrl"] <= 5
    meta = json.loads(conversation_samples(out, [], keep_clean=True)[0]["json"])
    assert meta["user"]["augmentation"]["kinds"] == ["noise"] and meta["assistant"]["augmentation"]["seed"] == -1
    assert set(conversation_samples(out, [], keep_clean=True)[0]) == {"__key__", "json", "user.flac", "assistant.flac",
                                                                       "user_clean.flac"}


@pytest.mark.integration
def test_the_tts_stage_speaks_backchannels_in_each_listeners_voice():
    from pipeline.stages.tts import TTSStage

    stage = TTSStage("piper", None, [JOE], backend_options={"noise_scale": 0.0, "noise_w_scale": 0.0}, threads=1)
    stage.backchannel_texts, stage.backchannel_roles = {"en": ["mm-hm", "right"]}, ["user", "assistant"]
    turns = [empty_turn("user", "Hello there."), empty_turn("assistant", "Hi, how can I help?")]
    for t in turns:
        t.update(spoken_text=t["display_text"], speaker_id=JOE.speaker_id)
    row = {"conversation_id": "c1", "language": "en", "seed": 1, "turns": turns}
    out = stage(rows_to_table([row])).to_pylist()[0]
    said = {(b["role"], b["text"]) for b in out["backchannels"]}
    assert said == {(r, t) for r in ("user", "assistant") for t in ("mm-hm", "right")}
    for b in out["backchannels"]:
        samples, rate = decode_audio(b["audio_flac"])
        assert rate == b["sample_rate"] and 0.1 < samples.size / rate < 2.0
