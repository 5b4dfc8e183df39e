"""Cut trailing babble: XTTS sometimes keeps talking (mumbles, breaths, noise) after the last word of the text.

faster-whisper's word timestamps say where the last recognised word ends; audio more than a margin after it
is dropped. Timestamps of tiny models are approximate, hence a margin (0.3 s by default) rather than a hard cut.
"""

from __future__ import annotations

import numpy as np

from pipeline.backends.asr import WhisperASR


def transcribe_words(asr: WhisperASR, audio_16k: np.ndarray, language: str | None = None) -> tuple[str, float | None]:
    """The transcript (same settings as `WhisperASR.transcribe`) and the end time of the last word, if any."""
    segments, _info = asr.model.transcribe(audio_16k, language=language or asr.language, beam_size=asr.beam_size,
                                           condition_on_previous_text=False, word_timestamps=True, vad_filter=False)
    segments = list(segments)
    ends = [w.end for s in segments for w in (s.words or [])]
    return " ".join(s.text.strip() for s in segments).strip(), (max(ends) if ends else None)


def trim_after(samples: np.ndarray, rate: int, last_word_end_s: float | None, margin_s: float) -> np.ndarray | None:
    """Samples cut at `last_word_end_s + margin_s`, or None when nothing needs cutting (or no word was heard:
    then the ASR check, not trimming, decides)."""
    if last_word_end_s is None:
        return None
    keep = round((last_word_end_s + margin_s) * rate)
    return samples[:keep].copy() if keep < samples.size else None
