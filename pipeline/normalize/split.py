"""Split a long turn into pieces a TTS model can say in one go.

XTTS-v2 warns, and cuts the audio short, past a per-language character count (its tokenizer's
`char_limits`), and one over-long sentence can exceed its 400-token cap outright. Pieces therefore end
at sentence ends where possible, merged greedily up to the limit; only a sentence that alone is too
long is broken, first at clause marks (，、： and commas), then between words. A word is never cut
unless it alone exceeds the limit. The pieces are consecutive slices of the text: joining them gives
the text back, whitespace aside.
"""

from __future__ import annotations

import re
import unicodedata

# XTTS-v2 tokenizer char_limits (TTS/tts/layers/xtts/tokenizer.py); the region is dropped (zh-cn -> zh)
XTTS_CHAR_LIMITS = {"en": 250, "de": 253, "fr": 273, "es": 239, "it": 213, "pt": 203, "pl": 224, "zh": 82,
                    "ar": 166, "cs": 186, "ru": 182, "nl": 251, "tr": 226, "ja": 71, "hu": 224, "ko": 95,
                    "hi": 150}

_HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CLOSERS = "”’」』）》〉】)\\]}\"'"
# Chinese marks end a sentence wherever they are; ASCII ones only before a space or the end, so that
# 3.5, e.g. and Wi-Fi.com stay whole. In Chinese text an ASCII mark directly before a Han character
# also ends one ("OK!我们走吧").
_SENTENCE = re.compile(rf"(?:[。！？；]|…+|[.!?;]+[{_CLOSERS}]*(?=\s|$))[{_CLOSERS}]*\s*")
_SENTENCE_ZH = re.compile(rf"(?:[。！？；]|…+|[.!?;]+[{_CLOSERS}]*(?=\s|$|[{_HAN}]))[{_CLOSERS}]*\s*")
_CLAUSE = re.compile(rf"(?:[，、：]|[,:]+(?=\s|$|[{_HAN}])|\s[-–—]+(?=\s))[{_CLOSERS}]*\s*")


def char_limit(language: str) -> int:
    return XTTS_CHAR_LIMITS.get(language.lower().replace("_", "-").split("-")[0], 250)


def _pieces(text: str, marks: re.Pattern) -> list[str]:
    """The text cut after every mark, each piece keeping its mark and the whitespace after it."""
    out, start = [], 0
    for m in marks.finditer(text):
        if m.end() > start:
            out.append(text[start:m.end()])
            start = m.end()
    if start < len(text):
        out.append(text[start:])
    return out


def _in_word(c: str) -> bool:
    """Part of a word that must stay whole: Latin (or other alphabetic) letters, digits, inner ' and -.
    Han characters are words of their own, so a cut may fall between any two."""
    return (c.isalnum() or c in "'’-_") and not re.match(f"[{_HAN}]", c)


def _can_cut(text: str, i: int) -> bool:
    before, after = text[i - 1], text[i]
    if after.isspace() or before.isspace():
        return True
    if unicodedata.category(after).startswith("P"):  # a piece never starts with punctuation
        return False
    return not (_in_word(before) and _in_word(after))


def _hard_split(text: str, limit: int) -> list[str]:
    out, start = [], 0
    while len(text[start:].strip()) > limit:
        while text[start].isspace():
            start += 1
        end = start + limit
        cut = next((i for i in range(end, start, -1) if _can_cut(text, i)), end)  # else one word > limit
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def split_for_tts(text: str, language: str, max_chars: int | None = None) -> list[str]:
    """Pieces of `text`, each at most `max_chars` characters (the XTTS-v2 limit of `language` if None)."""
    limit = char_limit(language) if max_chars is None else max_chars
    if limit < 1:
        raise ValueError(f"max_chars must be at least 1, got {limit}")
    chinese = language.lower().startswith(("zh", "yue"))
    units: list[str] = []
    for sentence in _pieces(text, _SENTENCE_ZH if chinese else _SENTENCE):
        if len(sentence.strip()) <= limit:
            units.append(sentence)
            continue
        for clause in _pieces(sentence, _CLAUSE):
            units.extend([clause] if len(clause.strip()) <= limit else _hard_split(clause, limit))
    chunks: list[str] = []
    current = ""
    for unit in units:
        if current.strip() and len((current + unit).strip()) > limit:
            chunks.append(current)
            current = unit
        else:
            current += unit
    chunks.append(current)
    return [chunk.strip() for chunk in chunks if chunk.strip()]
