"""Where the speech is in a clip: its bounds (frame energy) and its pauses (silero-vad or frame energy).

TTS output is clean, so the first and last frames above an energy floor are exact speech bounds; pauses inside a
turn are better found by silero-vad (breaths and low vowels are not pauses), whose ONNX model ships inside
faster-whisper (already a dependency; no torch needed).
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np

FRAME_S = 0.01


def frame_db(samples: np.ndarray, sample_rate: int, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level in dBFS of consecutive frames (the last partial frame is dropped)."""
    hop = max(1, round(frame_s * sample_rate))
    n = len(samples) // hop
    if n == 0:
        return np.zeros(0)
    frames = np.asarray(samples[:n * hop], dtype=np.float64).reshape(n, hop)
    return 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)


def active_frames(samples: np.ndarray, sample_rate: int, floor_db: float = -50.0, below_peak_db: float = 40.0,
                  frame_s: float = FRAME_S) -> np.ndarray:
    """Boolean per frame: louder than `floor_db` and than `below_peak_db` under the clip's loudest frame."""
    levels = frame_db(samples, sample_rate, frame_s)
    if levels.size == 0:
        return np.zeros(0, dtype=bool)
    return levels > max(floor_db, levels.max() - below_peak_db)


def speech_bounds(samples: np.ndarray, sample_rate: int, margin_s: float = 0.02) -> tuple[int, int]:
    """First and last sample of speech (energy), widened by `margin_s`; (0, 0) for a silent clip."""
    active = np.flatnonzero(active_frames(samples, sample_rate))
    if active.size == 0:
        return 0, 0
    hop = round(FRAME_S * sample_rate)
    margin = round(margin_s * sample_rate)
    return max(0, active[0] * hop - margin), min(len(samples), (active[-1] + 1) * hop + margin)


def find_pauses(samples: np.ndarray, sample_rate: int, min_pause_s: float,
                detector: Literal["silero", "energy"] = "silero") -> list[tuple[float, float]]:
    """Silences of at least `min_pause_s` between speech inside a clip, as (start_s, end_s); never the edges."""
    if detector == "silero":
        spans = _silero_speech(samples, sample_rate, min_pause_s)
    else:
        spans = _energy_speech(samples, sample_rate, min_pause_s)
    return [(a_end, b_start) for (_, a_end), (b_start, _) in itertools.pairwise(spans) if b_start - a_end >= min_pause_s]


def _silero_speech(samples: np.ndarray, sample_rate: int, min_pause_s: float) -> list[tuple[float, float]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from pipeline.audio import resample

    x = resample(samples, sample_rate, 16000)
    pad_ms = 30
    # a pause of min_pause_s loses 2 x pad to the padding of the speech on each side
    options = VadOptions(min_silence_duration_ms=int(min_pause_s * 1000) + 2 * pad_ms, speech_pad_ms=pad_ms)
    return [(c["start"] / 16000, c["end"] / 16000) for c in get_speech_timestamps(x, options, sampling_rate=16000)]


def _energy_speech(samples: np.ndarray, sample_rate: int, min_pause_s: float) -> list[tuple[float, float]]:
    active = active_frames(samples, sample_rate, below_peak_db=35.0)
    spans: list[tuple[float, float]] = []
    start = None
    for i, on in enumerate(np.append(active, False)):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append((start * FRAME_S, i * FRAME_S))
            start = None
    merged: list[tuple[float, float]] = []
    for span in spans:  # silences shorter than a pause are inside a word
        if merged and span[0] - merged[-1][1] < min_pause_s:
            merged[-1] = (merged[-1][0], span[1])
        else:
            merged.append(span)
    return merged
