"""Real Piper turns (en_US joe) with faster-whisper word timings, for the duplex and augmentation tests.

Synthesising is the slow part, so a small set of turns is spoken once and conversations are drawn from it:
the timeline's choices depend on the seed, the durations and the pauses, not on which words are said.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

USER_TEXTS = [
    "Hi, can you help me plan a short trip to the coast this weekend?",
    "What should I pack if the weather turns cold?",
    ("I usually take the train, but this time I was thinking about driving there myself, "
     "because I want to stop in a few small towns along the way."),
    "That sounds good. How long would the drive take?",
    "Okay. And what about food, are there good places to eat near the harbour?",
    "I see. My sister is coming too, and she does not eat meat, so we need a few vegetarian options.",
]
ASSISTANT_TEXTS = [
    ("Of course. The coast is lovely at this time of year. You could leave on Saturday morning, "
     "spend the afternoon walking along the cliffs, and come back on Sunday evening."),
    ("Bring a warm jacket and a rain coat. The wind near the sea can be strong, "
     "and the evenings get cold quickly, even in summer."),
    ("Driving gives you more freedom. There are three pretty villages on the old coast road, "
     "and each one has a small market on Saturday mornings."),
    ("It takes about two and a half hours without stops. With a few breaks for coffee and photos, "
     "plan for four hours, and try to leave before nine to miss the traffic."),
    ("Yes, the harbour has several good places. The fish restaurant by the lighthouse is popular, "
     "so it is worth booking a table a day ahead."),
    ("No problem at all. The cafe on the main square has a long vegetarian menu, "
     "and the market sells fresh bread, cheese and fruit for a picnic."),
]
BACKCHANNEL_TEXTS = ["mm-hm", "right", "yeah", "okay", "I see"]


def corpus_cache(tmp_path_factory) -> Path:
    """A fresh folder per test session; SPEECHCHAT_TEST_PIPER_CACHE keeps the turns between runs (development)."""
    kept = os.environ.get("SPEECHCHAT_TEST_PIPER_CACHE")
    return Path(kept) if kept else tmp_path_factory.mktemp("piper-turns")


def synthesize_corpus(cache: Path) -> dict[str, list]:
    """{"user": [...], "assistant": [...], "backchannel": {text: (samples, rate)}}; each turn is
    (text, samples, rate, words) with words as (word, start_s, end_s). Cached as .npz in `cache`."""
    from pipeline.assets import whisper_tiny_en
    from pipeline.tts.piper import PiperBackend
    from pipeline.voices.pool import Speaker

    cache.mkdir(parents=True, exist_ok=True)
    speaker = Speaker(speaker_id="piper-en_US-joe-medium", language="en", source="test", license="test", backend="piper")
    tts = PiperBackend(None, noise_scale=0.0, noise_w_scale=0.0, threads=1)  # reproducible audio
    asr = None
    out: dict[str, list] = {"user": [], "assistant": [], "backchannel": {}}
    for role, texts in (("user", USER_TEXTS), ("assistant", ASSISTANT_TEXTS)):
        for i, text in enumerate(texts):
            path = cache / f"{role}-{i}.npz"
            if not path.is_file():
                samples, rate = tts.synthesize(text, speaker)
                if asr is None:
                    from faster_whisper import WhisperModel

                    asr = WhisperModel(str(whisper_tiny_en()), device="cpu", compute_type="int8", cpu_threads=1)
                words = _words(asr, samples, rate)
                np.savez(path, samples=samples, rate=rate, words=np.array(words, dtype=object), text=text)
            data = np.load(path, allow_pickle=True)
            out[role].append((str(data["text"]), data["samples"], int(data["rate"]),
                              [tuple(w) for w in data["words"].tolist()]))
    for i, text in enumerate(BACKCHANNEL_TEXTS):
        path = cache / f"bc-{i}.npz"
        if not path.is_file():
            samples, rate = tts.synthesize(text, speaker)
            np.savez(path, samples=samples, rate=rate)
        data = np.load(path)
        out["backchannel"][text] = (data["samples"], int(data["rate"]))
    return out


def _words(asr, samples: np.ndarray, rate: int) -> list[tuple[str, float, float]]:
    from pipeline.audio import resample

    segments, _ = asr.transcribe(resample(samples, rate, 16000), language="en", beam_size=1, word_timestamps=True)
    return [(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in (s.words or [])]


def conversation(corpus: dict[str, list], rng: np.random.Generator, exchanges: int = 3):
    """TurnClips of one conversation: `exchanges` user/assistant pairs drawn from the corpus."""
    from pipeline.render.duplex import TurnClip, Word

    turns = []
    for _ in range(exchanges):
        for role in ("user", "assistant"):
            text, samples, rate, words = corpus[role][int(rng.integers(len(corpus[role])))]
            turns.append(TurnClip(role, text, samples, rate, speaker_id=f"{role}-voice",
                                  words=[Word(w, s, e) for w, s, e in words]))
    return turns


def backchannel_source(corpus: dict[str, list]):
    def source(role: str, text: str):
        return corpus["backchannel"][text]
    return source
