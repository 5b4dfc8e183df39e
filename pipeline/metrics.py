"""Error rates between the text a turn should say and what ASR heard, after one normaliser on both sides."""

from __future__ import annotations

from functools import lru_cache

import jiwer


@lru_cache(maxsize=None)
def _english_normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_for_scoring(text: str, language: str) -> str:
    if language == "en":
        return " ".join(_english_normalizer()(text).split())
    raise ValueError(f"no scoring normaliser for language {language!r}")


def error_rate(reference: str, hypothesis: str, language: str) -> float:
    """WER for English (words). 1.0 when the reference normalises to nothing but something was heard."""
    ref, hyp = normalize_for_scoring(reference, language), normalize_for_scoring(hypothesis, language)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))
