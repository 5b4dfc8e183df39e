"""Cut trailing babble: XTTS sometimes keeps talking (mumbles, breaths, noise) after the last word of the text.

The ASR backend's word timestamps (`ASRBackend.transcribe_words`) say where the last recognised word ends; audio more than a margin after it
is dropped. Timestamps of tiny models are approximate, hence a margin (0.3 s by default) rather than a hard cut.
"""

from __future__ import annotations

import numpy as np


def trim_after(samples: np.ndarray, rate: int, last_word_end_s: float | None, margin_s: float) -> np.ndarray | None:
    """Samples cut at `last_word_end_s + margin_s`, or None when nothing needs cutting (or no word was heard:
    then the ASR check, not trimming, decides)."""
    if last_word_end_s is None:
        return None
    keep = round((last_word_end_s + margin_s) * rate)
    return samples[:keep].copy() if keep < samples.size else None
