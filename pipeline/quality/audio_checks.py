"""Audio checks a data team expects on every synthesised turn: edge silence, long pauses, clipping, loudness,
speech rate.

Each check answers one question about one turn and returns None or a `Failure` (a registered reason code
with turn, metric, value and limit: `pipeline.reasons.Failure`); its score goes into the turn either way. Two checks also repair what they
can: over-long edge silence is trimmed to a margin, and loudness is normalised to a target under a peak ceiling;
the scores then describe the audio that is kept, as DNSMOS and ASR (which run after these checks) do.

Speech is found with Silero VAD (v6), the copy that faster-whisper ships as ONNX inside its PyPI package and runs
with onnxruntime and numpy: the `silero-vad` package itself requires torch, which the plain install leaves out.
Loudness is ITU-R BS.1770 integrated loudness with pyloudnorm.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.audio import resample
from pipeline.config import VerifyConfig
from pipeline.reasons import Failure

VAD_RATE = 16000  # Silero VAD's rate (512-sample frames)
LOUDNESS_BLOCK_S = 0.4  # BS.1770's gating block: a shorter clip is looped to one block to be measured

# What each check stores per turn (null: not measured); these are turn fields and sample JSON fields.
SCORE_FIELDS = ("leading_silence_s", "trailing_silence_s", "max_pause_s", "clipped_fraction", "loudness_lufs",
                "speech_rate")


@dataclass
class TurnAudio:
    """A turn's audio after the checks (trimmed, normalised), its scores, and the first check it failed."""

    samples: np.ndarray
    rate: int
    scores: dict[str, float | None] = field(default_factory=dict)
    failure: Failure | None = None
    changed: bool = False  # samples differ from the input (trimmed or gain applied): re-encode them


@dataclass(frozen=True)
class Speech:
    """Speech segments of a clip in seconds, from the VAD."""

    segments: tuple[tuple[float, float], ...]
    duration_s: float

    @property
    def leading_s(self) -> float:
        return self.segments[0][0] if self.segments else self.duration_s

    @property
    def trailing_s(self) -> float:
        return max(0.0, self.duration_s - self.segments[-1][1]) if self.segments else self.duration_s

    @property
    def span_s(self) -> float:
        return self.segments[-1][1] - self.segments[0][0] if self.segments else 0.0

    @property
    def pauses_s(self) -> list[float]:
        return [b[0] - a[1] for a, b in zip(self.segments, self.segments[1:])]


class SpeechDetector:
    """Silero VAD from faster-whisper's package (ONNX, one thread), built once per worker."""

    def __init__(self, threshold: float = 0.5):
        from faster_whisper.vad import VadOptions, get_vad_model

        get_vad_model()  # load the ONNX session now (an actor's setup), not on the first turn
        # 100 ms of silence ends a segment, so pauses between phrases are seen; 30 ms of padding each side keeps
        # segment edges on the speech (VadOptions' 400 ms pad and 2 s minimum silence suit chunking for ASR)
        self.options = VadOptions(threshold=threshold, min_silence_duration_ms=100, speech_pad_ms=30)

    def speech(self, samples: np.ndarray, rate: int) -> Speech:
        from faster_whisper.vad import get_speech_timestamps

        x = resample(samples, rate, VAD_RATE)
        segments = get_speech_timestamps(x, self.options, sampling_rate=VAD_RATE) if x.size else []
        return Speech(tuple((s["start"] / VAD_RATE, s["end"] / VAD_RATE) for s in segments), x.size / VAD_RATE)


# --- the checks: each returns None or a Failure ----------------------------------------------------------


def check_speech_found(speech: Speech) -> Failure | None:
    return None if speech.segments else Failure(reason="audio_no_speech", metric="speech_s", value=0.0, limit=0.0)


def check_edge_silence(speech: Speech, cfg: VerifyConfig) -> tuple[Failure | None, tuple[float, float] | None]:
    """Leading and trailing silence against their limits. With trim_silence, an over-long edge is cut down to the
    margin instead of failing: returns the (start_s, end_s) to keep, or None when nothing is cut."""
    lead_over = cfg.max_leading_silence_s is not None and speech.leading_s > cfg.max_leading_silence_s
    trail_over = cfg.max_trailing_silence_s is not None and speech.trailing_s > cfg.max_trailing_silence_s
    if not (lead_over or trail_over):
        return None, None
    if not cfg.trim_silence:
        if lead_over:
            return Failure(reason="audio_leading_silence", metric="leading_silence_s", value=speech.leading_s,
                           limit=cfg.max_leading_silence_s), None
        return Failure(reason="audio_trailing_silence", metric="trailing_silence_s", value=speech.trailing_s,
                       limit=cfg.max_trailing_silence_s), None
    start = speech.leading_s - cfg.silence_margin_s if lead_over else 0.0
    end = speech.duration_s - speech.trailing_s + cfg.silence_margin_s if trail_over else speech.duration_s
    return None, (max(0.0, start), min(speech.duration_s, end))


def check_pauses(speech: Speech, cfg: VerifyConfig) -> Failure | None:
    longest = max(speech.pauses_s, default=0.0)
    if cfg.max_pause_s is not None and longest > cfg.max_pause_s:
        return Failure(reason="audio_long_pause", metric="max_pause_s", value=longest, limit=cfg.max_pause_s)
    return None


def clipped_fraction(samples: np.ndarray, level: float) -> float:
    return float(np.count_nonzero(np.abs(samples) >= level)) / max(samples.size, 1)


def check_clipping(fraction: float, cfg: VerifyConfig) -> Failure | None:
    if cfg.max_clipped_fraction is not None and fraction > cfg.max_clipped_fraction:
        return Failure(reason="audio_clipped", metric="clipped_fraction", value=fraction,
                       limit=cfg.max_clipped_fraction)
    return None


def integrated_loudness(samples: np.ndarray, rate: int) -> float:
    """BS.1770 integrated loudness in LUFS (-inf for digital silence). A clip shorter than one 400 ms gating
    block is looped to fill it, which leaves the loudness of a steady clip unchanged."""
    import pyloudnorm

    x = np.asarray(samples, dtype=np.float64)
    block = math.ceil(LOUDNESS_BLOCK_S * rate) + 1
    if 0 < x.size < block:
        x = np.tile(x, math.ceil(block / x.size))
    if x.size == 0 or not np.any(x):
        return float("-inf")
    return float(pyloudnorm.Meter(rate).integrated_loudness(x))


def check_loudness(lufs: float, cfg: VerifyConfig) -> Failure | None:
    if cfg.loudness == "off" or cfg.max_loudness_deviation_lu is None:
        return None
    quiet_limit = cfg.loudness_target_lufs - cfg.max_loudness_deviation_lu
    loud_limit = cfg.loudness_target_lufs + cfg.max_loudness_deviation_lu
    if not math.isfinite(lufs) or lufs < quiet_limit:  # -inf: digital silence
        return Failure(reason="audio_loudness_off", metric="loudness_lufs", value=lufs if math.isfinite(lufs) else -100.0,
                       limit=quiet_limit)
    if lufs > loud_limit:
        return Failure(reason="audio_loudness_off", metric="loudness_lufs", value=lufs, limit=loud_limit)
    return None


def loudness_gain(samples: np.ndarray, lufs: float, cfg: VerifyConfig) -> float:
    """Linear gain that brings the clip to the target loudness, lowered so the sample peak stays under the ceiling."""
    gain = 10 ** ((cfg.loudness_target_lufs - lufs) / 20)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    ceiling = 10 ** (cfg.loudness_peak_dbfs / 20)
    return min(gain, ceiling / peak) if peak > 0 else gain


def speech_units(text: str, language: str) -> int:
    """Words for English; for Chinese, Han characters (each one syllable) plus any Latin words or digit runs."""
    if language.startswith("zh"):
        han = sum(1 for c in text if "CJK" in unicodedata.name(c, ""))
        other = "".join(c if (c.isascii() and c.isalnum()) else " " for c in text).split()
        return han + len(other)
    return len(text.split())


def check_speech_rate(text: str, language: str, speech: Speech, cfg: VerifyConfig) -> tuple[Failure | None, float | None]:
    """Units per second of speech span against the language's range; (failure, rate). No range: (None, rate)."""
    units = speech_units(text, language)
    if speech.span_s <= 0 or units == 0:
        return None, None
    rate = units / speech.span_s
    limits = cfg.speech_rate.get(language) or cfg.speech_rate.get(language.split("-")[0])
    if limits is None:
        return None, rate
    metric = "chars_per_s" if language.startswith("zh") else "words_per_s"
    if limits.min is not None and rate < limits.min:
        return Failure(reason="audio_speech_rate", metric=metric, value=rate, limit=limits.min), rate
    if limits.max is not None and rate > limits.max:
        return Failure(reason="audio_speech_rate", metric=metric, value=rate, limit=limits.max), rate
    return None, rate


# --- all of them on one turn --------------------------------------------------------------------------------


class AudioChecker:
    """Runs every audio check on a turn in the order that keeps each score honest: VAD -> edge silence (trim)
    -> clipping (before any gain, which would hide it) -> loudness (normalise) -> pauses -> speech rate."""

    def __init__(self, cfg: VerifyConfig):
        self.cfg = cfg
        self.vad = SpeechDetector(cfg.vad_threshold)

    def check_turn(self, samples: np.ndarray, rate: int, text: str, language: str, turn: int | None = None) -> TurnAudio:
        cfg = self.cfg
        out = TurnAudio(np.asarray(samples, dtype=np.float32), rate, {k: None for k in SCORE_FIELDS})
        speech = self.vad.speech(out.samples, rate)
        failure = check_speech_found(speech)
        if failure is None:
            failure, keep = check_edge_silence(speech, cfg)
            if keep is not None:
                lo, hi = round(keep[0] * rate), round(keep[1] * rate)
                out.samples, out.changed = out.samples[lo:hi].copy(), True
                speech = Speech(tuple((a - lo / rate, b - lo / rate) for a, b in speech.segments), out.samples.size / rate)
            out.scores.update(leading_silence_s=round(speech.leading_s, 3), trailing_silence_s=round(speech.trailing_s, 3))
        out.scores["clipped_fraction"] = round(clipped_fraction(out.samples, cfg.clip_level), 6)
        failure = failure or check_clipping(out.scores["clipped_fraction"], cfg)
        if cfg.loudness != "off":
            lufs = integrated_loudness(out.samples, rate)
            loud_failure = check_loudness(lufs, cfg)
            if loud_failure is None and cfg.loudness == "normalize" and math.isfinite(lufs):
                gain = loudness_gain(out.samples, lufs, cfg)
                out.samples, out.changed = (out.samples * gain).astype(np.float32), True
                lufs += 20 * math.log10(gain)
            out.scores["loudness_lufs"] = round(lufs, 2) if math.isfinite(lufs) else None
            failure = failure or loud_failure
        if speech.segments:
            out.scores["max_pause_s"] = round(max(speech.pauses_s, default=0.0), 3)
            failure = failure or check_pauses(speech, cfg)
            rate_failure, units_per_s = check_speech_rate(text, language, speech, cfg)
            out.scores["speech_rate"] = round(units_per_s, 3) if units_per_s is not None else None
            failure = failure or rate_failure
        if failure is not None and turn is not None:
            failure = replace(failure, turn=turn)
        out.failure = failure
        return out

