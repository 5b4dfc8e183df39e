"""User-side augmentation measured back from the audio: SNR, RT60, telephone band limit, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from duplex_corpus import corpus_cache, synthesize_corpus
from scipy.signal import fftconvolve

from pipeline.audio import resample
from pipeline.config import AugmentConfig
from pipeline.render.augment import (
    BabbleClip,
    UserAugmenter,
    room_impulse_response,
    schroeder_rt60,
)

RATE = 16000
ONLY_NOISE = {"reverb_prob": 0.0, "noise_prob": 1.0, "telephone_prob": 0.0, "codec_prob": 0.0, "gain_prob": 0.0}


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    corpus = synthesize_corpus(corpus_cache(tmp_path_factory))
    clips = {role: [resample(s, r, RATE) for _, s, r, _ in corpus[role]] for role in ("user", "assistant")}
    babble = [BabbleClip(f"pool-voice-{i}", c) for i, c in enumerate(clips["assistant"])]
    return clips["user"], babble


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(clean ** 2)) / np.sqrt(np.mean((noisy - clean) ** 2))))


def _above_4k_db(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    return float(10 * np.log10(power[freqs > 4000].sum() / power.sum() + 1e-30))


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["colored", "babble", "clips"])
def test_snr_measured_back_is_within_1db_of_the_recipe(speech, kind, tmp_path):
    users, babble = speech
    noise_dir = tmp_path / "noises"
    noise_dir.mkdir()
    rng = np.random.default_rng(0)
    hum = 0.2 * np.sin(2 * np.pi * 50 * np.arange(3 * RATE) / RATE) + 0.05 * rng.standard_normal(3 * RATE)
    sf.write(noise_dir / "hum.wav", hum.astype(np.float32), RATE)
    sf.write(noise_dir / "hiss.flac", (0.1 * rng.standard_normal(5 * RATE)).astype(np.float32), RATE)
    augmenter = UserAugmenter(AugmentConfig(**ONLY_NOISE, noise_kinds={kind: 1.0}), babble=babble, noise_dir=noise_dir)
    for seed, clean in enumerate(users[:4]):
        noisy, recipe = augmenter.augment(clean, RATE, seed=seed)
        assert recipe["kinds"] == ["noise"] and recipe["noise"]["kind"] == kind
        # a mix over full scale was scaled down as a whole: the clean reference scales with it
        reference = clean * 10 ** (recipe.get("limit_db", 0.0) / 20)
        assert abs(_snr_db(reference, noisy) - recipe["snr_db"]) <= 1.0, recipe
        assert 5.0 <= recipe["snr_db"] <= 25.0
    if kind == "babble":
        assert all(t.startswith("pool-voice-") for t in recipe["noise"]["talkers"]) and len(recipe["noise"]["talkers"]) >= 3
    if kind == "clips":
        assert recipe["noise"]["file"] in {"hum.wav", "hiss.flac"}


@pytest.mark.integration
def test_reverberated_rt60_is_within_20_percent_of_the_simulated_room(speech):
    users, _ = speech
    augmenter = UserAugmenter(AugmentConfig(reverb_prob=1.0, noise_prob=0.0, telephone_prob=0.0, codec_prob=0.0,
                                            gain_prob=0.0))
    rt60s = []
    for seed in range(5):
        impulse = np.zeros(2 * RATE, dtype=np.float32)
        impulse[0] = 0.5
        response, recipe = augmenter.augment(impulse, RATE, seed=seed)  # the chain's own impulse response
        estimated = schroeder_rt60(response, RATE)
        assert abs(estimated / recipe["rt60_s"] - 1) <= 0.20, (estimated, recipe["room"])
        rt60s.append(recipe["rt60_s"])
        # a speech clip with the same seed goes through that same room
        clean = users[seed % len(users)]
        wet, again = augmenter.augment(clean, RATE, seed=seed)
        assert again["room"] == recipe["room"]
        expected = fftconvolve(clean, room_impulse_response(recipe["room"]))[:clean.size]
        expected *= 10 ** (again.get("limit_db", 0.0) / 20)
        assert np.corrcoef(wet, expected)[0, 1] > 0.999
        assert np.corrcoef(wet, clean)[0, 1] < 0.98  # and it is not the dry clip
    assert max(rt60s) - min(rt60s) > 0.1  # the rooms differ


@pytest.mark.integration
@pytest.mark.parametrize("codec", ["mulaw", "gsm"])
def test_the_telephone_channel_has_no_energy_above_4khz(speech, codec):
    users, _ = speech
    augmenter = UserAugmenter(AugmentConfig(reverb_prob=0.0, noise_prob=0.0, telephone_prob=1.0, codec_prob=0.0,
                                            gain_prob=0.0, telephone_codecs=[codec]))
    clean = users[2]
    phone, recipe = augmenter.augment(clean, RATE, seed=1)
    assert recipe["channel"] == {"kind": "telephone", "codec": codec, "sample_rate": 8000, "highpass_hz": 300.0}
    assert _above_4k_db(clean) > -30  # Piper speech has energy up there ...
    assert _above_4k_db(phone) < -60  # ... the line has none
    assert phone.size == clean.size and np.corrcoef(phone, clean)[0, 1] > 0.5  # still the same speech, aligned


@pytest.mark.integration
@pytest.mark.parametrize("codec", ["opus", "mp3"])
def test_a_lossy_codec_changes_the_audio_but_keeps_it_aligned(speech, codec):
    users, _ = speech
    augmenter = UserAugmenter(AugmentConfig(reverb_prob=0.0, noise_prob=0.0, telephone_prob=0.0, codec_prob=1.0,
                                            gain_prob=0.0, codecs=[codec]))
    clean = users[0]
    coded, recipe = augmenter.augment(clean, RATE, seed=2)
    assert recipe["channel"]["codec"] == codec and recipe["channel"]["bitrate_kbps"] in {8, 12, 16, 24, 32}
    assert coded.size == clean.size and not np.allclose(coded, clean, atol=1e-3)
    assert np.corrcoef(coded, clean)[0, 1] > 0.8


@pytest.mark.integration
def test_same_seed_same_audio_and_recipe(speech, tmp_path):
    users, babble = speech
    cfg = AugmentConfig(reverb_prob=0.7, noise_prob=1.0, telephone_prob=0.3, codec_prob=0.3, gain_prob=0.7)
    augmenter = UserAugmenter(cfg, babble=babble)
    kinds = set()
    for seed in range(6):
        clean = users[seed % len(users)]
        a, recipe_a = augmenter.augment(clean, RATE, seed=seed)
        b, recipe_b = UserAugmenter(cfg, babble=babble).augment(clean, RATE, seed=seed)  # a fresh worker
        assert np.array_equal(a, b) and recipe_a == recipe_b
        assert json.loads(json.dumps(recipe_a)) == recipe_a  # goes into the sample JSON as it is
        kinds |= set(recipe_a["kinds"])
        other, recipe_c = augmenter.augment(clean, RATE, seed=seed + 100)
        assert recipe_c != recipe_a and not np.array_equal(other, a)
        assert a.size == clean.size and np.max(np.abs(a)) <= 0.99 + 1e-6
    assert kinds >= {"reverb", "noise", "gain"} and kinds & {"telephone", "codec"}


def test_bad_settings_are_clear_errors(tmp_path):
    from pipeline.render.augment import AugmentError

    with pytest.raises(ValueError, match="snr_min_db"):
        AugmentConfig(snr_min_db=30, snr_max_db=10)
    with pytest.raises(ValueError, match="telephone_prob \\+ codec_prob"):
        AugmentConfig(telephone_prob=0.6, codec_prob=0.6)
    with pytest.raises(AugmentError, match="holds no"):
        UserAugmenter(AugmentConfig(), noise_dir=tmp_path)
    with pytest.raises(AugmentError, match="not a folder"):
        UserAugmenter(AugmentConfig(), noise_dir=tmp_path / "missing")
