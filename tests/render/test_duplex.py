"""Duplex timelines measured on real Piper conversations: what each channel's audio does matches the timeline."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import soundfile as sf
from duplex_corpus import (
    backchannel_source,
    conversation,
    corpus_cache,
    synthesize_corpus,
)

from pipeline.config import DuplexConfig
from pipeline.render.duplex import TurnClip, Word, render_duplex, split_spoken_text

TOLERANCE_S = 0.05
MEASURE_FRAME_S = 0.005  # the measurement's own frames (the renderer trims on 10-ms frames)

# every kind of event often enough to be measured in a handful of conversations
BUSY = DuplexConfig(overlap_rate=0.3, backchannel_rate=0.5, interruption_rate=0.4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synthesize_corpus(corpus_cache(tmp_path_factory))


def _render(corpus, n: int, cfg: DuplexConfig, exchanges: int = 3):
    out = []
    for i in range(n):
        turns = conversation(corpus, np.random.default_rng(1000 + i), exchanges)
        out.append(render_duplex(turns, cfg, seed=i, language="en", backchannel=backchannel_source(corpus)))
    return out


def _activity(channel: np.ndarray, rate: int) -> np.ndarray:
    """Active 5-ms frames of one channel, by energy: over -50 dBFS and within 45 dB of the channel's peak."""
    hop = int(MEASURE_FRAME_S * rate)
    n = len(channel) // hop
    db = 10 * np.log10(np.mean(channel[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    return db > max(-50.0, db.max() - 45.0)


def _decoded(rendering) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(rendering.flac()), dtype="float32", always_2d=True)
    assert audio.shape[1] == 2 and rate == 16000
    return audio, rate


@pytest.mark.integration
def test_each_channels_speech_matches_its_segments_within_50ms(corpus):
    kinds = set()
    for rendering in _render(corpus, 6, BUSY):
        audio, rate = _decoded(rendering)
        for channel in (0, 1):
            segs = [s for s in rendering.segments if s.channel == channel]
            active = _activity(audio[:, channel], rate)
            times = (np.arange(active.size) + 0.5) * MEASURE_FRAME_S
            # no speech outside this channel's segments
            inside = np.zeros(active.size, dtype=bool)
            for s in segs:
                inside |= (times >= s.start - TOLERANCE_S) & (times <= s.end + TOLERANCE_S)
            stray = times[active & ~inside]
            assert stray.size == 0, f"channel {channel}: speech at {stray[:5]} s outside every segment"
            # each segment starts and ends where its speech does
            for s in segs:
                within = times[active & (times >= s.start - TOLERANCE_S) & (times <= s.end + TOLERANCE_S)]
                assert within.size, f"{s.kind} {s.text!r} at {s.start:.2f}-{s.end:.2f} s is silent"
                assert abs(within[0] - s.start) <= TOLERANCE_S, (s.kind, s.start, within[0])
                assert abs(within[-1] - s.end) <= TOLERANCE_S, (s.kind, s.end, within[-1])
                kinds.add(s.kind)
    assert kinds == {"turn", "backchannel", "interrupted_turn"}


@pytest.mark.integration
def test_overlap_backchannel_and_interruption_rates_over_50_conversations(corpus):
    cfg = DuplexConfig(overlap_rate=0.25, backchannel_rate=0.35, interruption_rate=0.3)
    renderings = _render(corpus, 50, cfg)
    transitions = overlaps = interruptions = backchannels = 0
    for r in renderings:
        turns = sorted((s for s in r.segments if s.kind != "backchannel"), key=lambda s: s.turn)
        for prev, cur in itertools.pairwise(turns):
            if prev.kind == "interrupted_turn":
                interruptions += 1
                assert prev.interrupted_at == pytest.approx(cur.start) and cur.start < prev.end
                reaction = prev.end - cur.start
                assert cfg.interruption_reaction_min_s - 1e-3 <= reaction <= cfg.interruption_reaction_max_s + 1e-3
            else:
                transitions += 1
                overlaps += cur.start < prev.end  # measured on the timeline, not taken from the counts
        backchannels += sum(s.kind == "backchannel" for s in r.segments)
        audio, rate = _decoded(r)
        for s in (s for s in r.segments if s.kind == "backchannel"):
            # said at a pause: the speaker's channel is quiet where the backchannel starts
            other = audio[round(s.start * rate) - 160:round(s.start * rate) + 160, 1 - s.channel]
            assert 20 * np.log10(np.sqrt(np.mean(other ** 2)) + 1e-9) < -40, (s.start, s.text)
    counts = {k: sum(r.recipe["counts"][k] for r in renderings) for k in renderings[0].recipe["counts"]}
    assert counts["overlaps"] == overlaps and counts["interruptions"] == interruptions
    assert counts["backchannels"] == backchannels and counts["transitions"] == transitions

    def within_sampling_error(events: int, opportunities: int, rate: float) -> None:
        assert opportunities >= 40, f"only {opportunities} opportunities"
        error = 3 * math.sqrt(rate * (1 - rate) / opportunities)
        assert abs(events / opportunities - rate) <= error, (events, opportunities, rate, error)

    within_sampling_error(overlaps, transitions, cfg.overlap_rate)
    within_sampling_error(backchannels, counts["backchannel_opportunities"], cfg.backchannel_rate)
    within_sampling_error(interruptions, counts["interruption_opportunities"], cfg.interruption_rate)


def _word_count(text: str) -> int:
    from pipeline.metrics import normalize_for_scoring

    return sum(any(ch.isalnum() for ch in w) for w in normalize_for_scoring(text, "en").split())


@pytest.mark.integration
def test_an_interrupted_turn_stops_at_its_cut_and_says_only_the_spoken_part(corpus):
    from faster_whisper import WhisperModel

    from pipeline.assets import whisper_tiny_en
    from pipeline.metrics import error_rate

    asr = WhisperModel(str(whisper_tiny_en()), device="cpu", compute_type="int8", cpu_threads=1)
    cfg = DuplexConfig(interruption_rate=1.0, backchannel_rate=0.0, overlap_rate=0.0)
    checked = 0
    for r in _render(corpus, 4, cfg):
        audio, rate = _decoded(r)
        assistant = audio[:, 1]
        active = _activity(assistant, rate)
        for s in (s for s in r.segments if s.kind == "interrupted_turn"):
            nxt = min((o.start for o in r.segments if o.channel == 1 and o.start > s.start), default=r.duration_s)
            frames = np.flatnonzero(active[int(s.start / MEASURE_FRAME_S):int(nxt / MEASURE_FRAME_S)])
            heard_until = s.start + (frames[-1] + 1) * MEASURE_FRAME_S
            assert abs(heard_until - s.end) <= TOLERANCE_S and s.end == pytest.approx(s.start + s.cut_s, abs=1e-3)
            assert s.unspoken_text and s.text
            clip = assistant[round(s.start * rate):round(s.end * rate) + rate // 10]
            heard = " ".join(seg.text for seg in asr.transcribe(clip, language="en", beam_size=1)[0])
            # what is heard is the spoken part (Whisper may guess a word or two past the cut), not the whole turn
            said, rest, got = (_word_count(t) for t in (s.text, s.unspoken_text, heard))
            assert error_rate(s.text, heard, "en") <= 0.5, (heard, s.text)  # tiny.en mishears some Piper words
            assert abs(got - said) <= 2 < rest, (heard, s.text)
            checked += 1
    assert checked >= 4


@pytest.mark.integration
def test_same_seed_same_audio(corpus):
    turns = conversation(corpus, np.random.default_rng(7))
    source = backchannel_source(corpus)
    a, b = (render_duplex(turns, BUSY, seed=3, language="en", backchannel=source) for _ in range(2))
    c = render_duplex(turns, BUSY, seed=4, language="en", backchannel=source)
    assert a.flac() == b.flac() and a.timeline("x") == b.timeline("x")
    assert a.timeline("x")["segments"] != c.timeline("x")["segments"]


def test_split_spoken_text_follows_the_words_despite_asr_errors():
    text = "Driving gives you more freedom. There are three pretty villages on the old coast road."
    words = [Word(w, i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(
        ["Dryden", "gives", "you", "more", "freedom.", "There", "are", "3", "pretty", "villages", "on", "the", "old", "coast", "road."])]
    assert split_spoken_text(text, words, 4) == (
        "Driving gives you more freedom.", "There are three pretty villages on the old coast road.")
    assert split_spoken_text(text, words, 7) == ("Driving gives you more freedom. There are three",
                                                 "pretty villages on the old coast road.")
    zh = "今天天气很好，我们去公园散步吧。"
    zh_words = [Word(w, i * 0.3, i * 0.3 + 0.2) for i, w in enumerate(["今天", "天气", "很好，", "我们", "去", "公园"])]
    assert split_spoken_text(zh, zh_words, 2) == ("今天天气很好，", "我们去公园散步吧。")


def test_a_silent_turn_or_bad_role_is_a_clear_error():
    cfg = DuplexConfig()
    tone = (0.3 * np.sin(np.arange(16000) * 0.2)).astype(np.float32)
    with pytest.raises(ValueError, match="turn 1 .*silent"):
        render_duplex([TurnClip("user", "hi", tone, 16000), TurnClip("assistant", "", np.zeros(800), 16000)],
                      cfg, seed=0, language="en")
    with pytest.raises(ValueError, match="role 'system'"):
        render_duplex([TurnClip("system", "hi", tone, 16000)], cfg, seed=0, language="en")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overlap_min_s"):
        DuplexConfig(overlap_min_s=0.8, overlap_max_s=0.5)


def test_split_spoken_text_maps_a_number_that_asr_wrote_in_digits():
    text = "It takes about two and a half hours without stops."
    words = [Word(w, i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(["It", "takes", "about", "2", ".5", "hours",
                                                                      "without", "stops."])]
    assert split_spoken_text(text, words, 4) == ("It takes about two and a half", "hours without stops.")
    assert split_spoken_text(text, words, 5) == ("It takes about two and a half hours", "without stops.")


def test_only_boundaries_between_words_found_in_the_text_can_be_cut():
    from pipeline.render.duplex import words_matching_text

    words = [Word(w, 0, 0) for w in ["It", "takes", "about", "2", ".5", "hours", "without", "stops."]]
    assert words_matching_text("It takes about two and a half hours without stops.", words) == [
        True, True, True, False, False, True, True, True]
