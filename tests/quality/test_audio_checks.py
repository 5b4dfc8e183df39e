"""The audio checks (pipeline/quality/audio_checks.py) on real Piper en_US joe audio, and on clips made from it
by hand so that each one fails exactly one check: silence before the speech, a long pause, clipping, too quiet,
too fast, noise instead of speech. Also the TTS fault hook (pipeline/tts/faults.py) around the real Piper backend.
"""

import math

import numpy as np
import pytest

from pipeline.audio import decode_audio, encode_flac, resample
from pipeline.config import REPO_ROOT, VerifyConfig
from pipeline.quality import audio_checks as ac
from pipeline.tts.faults import FaultyTTS, TTSFaultPlan
from pipeline.voices.pool import load_pool

pytestmark = pytest.mark.integration  # loads Piper, DNSMOS or Whisper

TEXTS = [
    "Could you tell me how long it takes to walk to the train station from here?",
    "Sure. Why not? Let me check the calendar first, and then I will call you back.",
    "Thank you very much for your help today.",
    "No, thanks.",
]


@pytest.fixture(scope="module")
def piper():
    from pipeline.tts.piper import PiperBackend

    return PiperBackend(None, threads=1), load_pool(REPO_ROOT / "speakers/piper_en.jsonl")[0]


@pytest.fixture(scope="module")
def clips(piper):
    """Real Piper syntheses (sampling noise on, as in a default run), through 16-bit FLAC as the pipeline stores them."""
    backend, speaker = piper
    out = []
    for text in TEXTS:
        samples, rate = backend.synthesize(text, speaker)
        out.append((*decode_audio(encode_flac(samples, rate)), text))
    return out


@pytest.fixture(scope="module")
def checker():
    return ac.AudioChecker(VerifyConfig())


def silence(rate, seconds, level=1e-4, seed=0):
    """Near-silence as a room or a TTS model leaves it: very low noise rather than digital zeros."""
    return (np.random.default_rng(seed).normal(0, level, int(seconds * rate))).astype(np.float32)


def test_clean_piper_english_passes_every_check_with_the_defaults(clips, checker):
    for samples, rate, text in clips:
        for x, r in ((samples, rate), (resample(samples, rate, 16000), 16000)):  # assistant rate and user 16 kHz
            out = checker.check_turn(x, r, text, "en", turn=0)
            assert out.failure is None, (text, out.failure)
            s = out.scores
            assert 0 <= s["leading_silence_s"] <= 0.5 and 0 <= s["trailing_silence_s"] <= 0.5
            assert s["max_pause_s"] < 1.0 and s["clipped_fraction"] <= 0.001
            assert 1.0 <= s["speech_rate"] <= 6.5
            # normalised to the target (Piper peaks at full scale, -17 to -24 LUFS: the gain is downwards)
            assert s["loudness_lufs"] == pytest.approx(-23.0, abs=0.3)
            assert ac.integrated_loudness(out.samples, r) == pytest.approx(-23.0, abs=0.3)
            assert np.abs(out.samples).max() <= 10 ** (-1 / 20) + 1e-6


@pytest.mark.parametrize("edge", ["leading", "trailing"])
def test_edge_silence_is_trimmed_to_the_margin_or_fails_the_turn(clips, edge):
    samples, rate, text = clips[0]
    pad = silence(rate, 2.0)
    x = np.concatenate([pad, samples] if edge == "leading" else [samples, pad])
    trimmed = ac.AudioChecker(VerifyConfig(loudness="off")).check_turn(x, rate, text, "en", turn=3)
    assert trimmed.failure is None and trimmed.changed
    assert trimmed.scores[f"{edge}_silence_s"] == pytest.approx(0.2, abs=0.05)  # silence_margin_s
    assert x.size / rate - trimmed.samples.size / rate == pytest.approx(1.8, abs=0.15)
    strict = ac.AudioChecker(VerifyConfig(loudness="off", trim_silence=False)).check_turn(x, rate, text, "en", turn=3)
    f = strict.failure
    assert (f.reason, f.metric, f.turn, f.limit) == (f"audio_{edge}_silence", f"{edge}_silence_s", 3, 0.5)
    assert f.value == pytest.approx(2.0, abs=0.15)
    assert strict.samples.size == x.size  # a failed turn is not repaired


def test_a_long_pause_inside_a_turn_fails_it(clips, checker):
    (a, rate, ta), (b, _, tb) = clips[0], clips[2]
    out = checker.check_turn(np.concatenate([a, silence(rate, 2.0), b]), rate, f"{ta} {tb}", "en", turn=1)
    f = out.failure
    assert (f.reason, f.metric, f.limit, f.turn) == ("audio_long_pause", "max_pause_s", 1.0, 1)
    assert f.value == pytest.approx(2.0, abs=0.2) and out.scores["max_pause_s"] == pytest.approx(f.value)


def test_clipped_audio_fails(clips, checker):
    samples, rate, text = clips[1]
    hot = np.clip(samples * 4.0, -1.0, 1.0)  # driven into full scale, as an overflowing vocoder does
    out = checker.check_turn(hot, rate, text, "en")
    assert out.failure.reason == "audio_clipped" and out.failure.limit == 0.001
    assert out.failure.value > 0.01 and out.scores["clipped_fraction"] == pytest.approx(out.failure.value, rel=1e-3)


def test_too_quiet_audio_fails_and_moderately_quiet_audio_is_normalised(clips, checker):
    samples, rate, text = clips[0]
    quiet = checker.check_turn(samples * 10 ** (-40 / 20), rate, text, "en")  # about -60 LUFS
    assert quiet.failure.reason == "audio_loudness_off" and quiet.failure.limit == -38.0
    assert quiet.failure.value < -55
    soft = checker.check_turn(samples * 10 ** (-10 / 20), rate, text, "en")  # about -30 LUFS: within 15 LU
    assert soft.failure is None and soft.scores["loudness_lufs"] == pytest.approx(-23.0, abs=0.3)


def test_the_peak_ceiling_limits_the_gain(clips):
    samples, rate, text = clips[0]
    cfg = VerifyConfig(loudness_target_lufs=-10.0)  # Piper already peaks at 0 dBFS: no room for +10 LU
    out = ac.AudioChecker(cfg).check_turn(samples, rate, text, "en")
    assert out.failure is None
    assert np.abs(out.samples).max() == pytest.approx(10 ** (-1 / 20), rel=1e-3)
    assert out.scores["loudness_lufs"] < -15


def test_too_fast_speech_fails(clips, checker):
    samples, rate, text = clips[1]
    fast = resample(samples, rate, int(rate / 2.2))  # played 2.2x faster at the original rate
    out = checker.check_turn(fast, rate, text, "en", turn=0)
    f = out.failure
    assert (f.reason, f.metric, f.limit) == ("audio_speech_rate", "words_per_s", 6.5)
    assert f.value > 6.5
    slow = ac.AudioChecker(VerifyConfig(speech_rate={"en": {"min": 5.0}})).check_turn(samples, rate, text, "en")
    assert slow.failure.reason == "audio_speech_rate" and slow.failure.limit == 5.0


def test_noise_has_no_speech(clips, checker):
    samples, rate, text = clips[0]
    noise = np.random.default_rng(1).normal(0, 0.1, samples.size).astype(np.float32)
    out = checker.check_turn(noise, rate, text, "en")
    assert out.failure.reason == "audio_no_speech"
    assert out.scores["speech_rate"] is None and out.scores["max_pause_s"] is None


def test_loudness_of_a_clip_shorter_than_one_gating_block(clips):
    samples, rate, _ = clips[3]
    short = samples[: int(0.25 * rate)]
    assert math.isfinite(ac.integrated_loudness(short, rate))
    assert ac.integrated_loudness(np.zeros(1000, dtype=np.float32), rate) == float("-inf")


def test_speech_units_per_language():
    assert ac.speech_units("Thank you very much.", "en") == 4
    assert ac.speech_units("你好，世界。", "zh") == 4
    assert ac.speech_units("我有3个apple", "zh") == 5  # 我 有 个 + "3" + "apple"


def test_fault_hook_chooses_turns_by_hash_and_counts_attempts():
    plan = TTSFaultPlan(mode="noise", fraction=0.1)
    chosen = [t for t in range(2000) if plan.chosen("en-x", t)]
    assert 140 <= len(chosen) <= 260  # about 10 %
    t = chosen[0]
    assert plan.hits("en-x", t, 1) and not plan.hits("en-x", t, 2)  # only the first synthesis
    every = TTSFaultPlan(mode="noise", turns=frozenset({("en-y", 2)}), attempts=99)
    assert all(every.hits("en-y", 2, a) for a in range(1, 10)) and not every.hits("en-y", 1, 1)
    assert TTSFaultPlan.from_env() is None
    with pytest.raises(ValueError):
        TTSFaultPlan(mode="babble")


def test_fault_hook_around_real_piper(piper, checker, monkeypatch):
    """Declared fault injection: FaultyTTS wraps the real Piper backend and makes chosen syntheses wrong."""
    backend, speaker = piper
    plan = TTSFaultPlan(mode="wrong_text", turns=frozenset({("en-a", 0)}))
    monkeypatch.setenv("SPEECHCHAT_TTS_FAULT", plan.to_env())
    assert TTSFaultPlan.from_env() == plan
    faulty = FaultyTTS(backend, plan)
    text = TEXTS[3]
    right, rate = faulty.synthesize(text, speaker, turn_key=("en-a", 0, 2))  # second attempt: the real text
    wrong, _ = faulty.synthesize(text, speaker, turn_key=("en-a", 0, 1))
    assert faulty.injected == 1 and faulty.model_id == backend.model_id
    assert wrong.size > 2 * right.size  # a whole other sentence instead of "No, thanks."
    noisy = FaultyTTS(backend, TTSFaultPlan(mode="noise", turns=frozenset({("en-a", 0)})))
    noise, _ = noisy.synthesize(text, speaker, turn_key=("en-a", 0, 1))
    assert noise.size == pytest.approx(right.size, rel=0.2)
    assert checker.check_turn(noise, rate, text, "en").failure.reason == "audio_no_speech"
    assert checker.check_turn(right, rate, text, "en").failure is None
