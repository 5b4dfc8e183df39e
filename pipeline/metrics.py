"""Error rates between the text a turn should say and what ASR heard, after one normaliser on both sides."""

from __future__ import annotations

import unicodedata
from functools import cache

import jiwer


@cache
def _english_normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


# Spellings of one spoken numeral that ASR and the text normaliser may choose differently.
_ZH_NUMERAL_VARIANTS = str.maketrans({"两": "二", "兩": "二", "幺": "一", "〇": "零"})


def _is_chinese(language: str) -> bool:
    return language == "zh" or language.startswith(("zh-", "zh_"))


def _normalize_chinese(text: str) -> str:
    """Both sides through normalize_zh (Arabic numerals, symbols and traditional characters meet the spoken,
    simplified form: "3点" = "三点", "50%" = "百分之五十"), then only the characters that carry speech."""
    from pipeline.normalize.zh import normalize_zh  # cn2an and OpenCC load only where Chinese is scored

    text = normalize_zh(text, to_simplified=True).lower().translate(_ZH_NUMERAL_VARIANTS)
    text = text.replace("百分之一百", "百分之百")
    return "".join(c for c in text if unicodedata.category(c)[0] not in "PSZC")


def normalize_for_scoring(text: str, language: str) -> str:
    if language == "en":
        return " ".join(_english_normalizer()(text).split())
    if _is_chinese(language):
        return _normalize_chinese(text)
    raise ValueError(f"no scoring normaliser for language {language!r}")


def error_rate(reference: str, hypothesis: str, language: str) -> float:
    """WER for English (words), CER for Chinese (characters: Chinese is written without spaces, so words
    would need a segmenter that ASR and reference may disagree with). 1.0 when the reference normalises to
    nothing but something was heard."""
    ref, hyp = normalize_for_scoring(reference, language), normalize_for_scoring(hypothesis, language)
    if not ref:
        return 0.0 if not hyp else 1.0
    if _is_chinese(language):
        return float(jiwer.cer(ref, hyp))
    return float(jiwer.wer(ref, hyp))
