"""English written-to-spoken normalisation for TTS input.

Markdown, URLs, e-mail addresses, emoji and template placeholders are removed; numbers, money,
percentages, ordinals, years, times and common symbols become words (num2words). The display text is
kept elsewhere; this produces what the synthesiser reads and what ASR output is scored against.
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((?:[^)\s]+)\)")
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_CODE_BLOCK = re.compile(r"```.*?```", re.S)
_MD_INLINE = re.compile(r"`([^`]*)`")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1")
_MD_LINE_PREFIX = re.compile(r"^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+]\s+|\d{1,3}[.)]\s+)", re.M)
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
# [name], {name}, <name>, {{name}}, [Your Name]: template slots an LLM forgot to fill
_PLACEHOLDER = re.compile(r"\{\{[^{}]{1,40}\}\}|\[[^\[\]\n]{1,40}\]|\{[^{}\n]{1,40}\}|<[^<>\n]{1,40}>")

_MONEY = re.compile(r"([$£€])\s?(\d[\d,]*)(?:\.(\d{1,2}))?\b(?:\s?(million|billion|thousand))?")
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.I)
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\s?([ap])\.?\s?m\b|\b([01]?\d|2[0-3]):([0-5]\d)\b", re.I)
_YEAR = re.compile(r"\b(1[1-9]\d\d|20\d\d)s?\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_NUMBER = re.compile(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+\b")
_RANGE = re.compile(r"\b(\d+)\s?[-–]\s?(\d+)\b")
_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "°C": " degrees Celsius ",
            "°F": " degrees Fahrenheit ", "°": " degrees ", "#": " number ", "/": " or ", "×": " times "}
_UNITS = {"km": "kilometres", "kg": "kilograms", "cm": "centimetres", "mm": "millimetres", "ml": "millilitres",
          "mph": "miles per hour", "kmh": "kilometres per hour", "km/h": "kilometres per hour", "g": "grams",
          "m": "metres", "l": "litres", "lb": "pounds", "lbs": "pounds", "oz": "ounces", "ft": "feet",
          "min": "minutes", "hr": "hours", "hrs": "hours", "gb": "gigabytes", "mb": "megabytes"}
_UNIT = re.compile(r"\b(\d+(?:\.\d+)?)\s?(" + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True)) + r")\b",
                   re.I)
_ABBREV = {"Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miss", "St.": "Saint", "e.g.": "for example",
           "i.e.": "that is", "etc.": "et cetera", "vs.": "versus", "approx.": "approximately"}


# Contractions an LLM writes without the apostrophe ("dont"): TTS says them oddly and ASR writes them back with
# it, which scored as a word error. Only forms that are not words themselves (no "its", "were", "ill", "lets").
_CONTRACTIONS = {
    "dont": "don't", "doesnt": "doesn't", "didnt": "didn't", "cant": "can't", "couldnt": "couldn't",
    "shouldnt": "shouldn't", "wouldnt": "wouldn't", "isnt": "isn't", "arent": "aren't", "wasnt": "wasn't",
    "werent": "weren't", "havent": "haven't", "hasnt": "hasn't", "hadnt": "hadn't", "wont": "won't",
    "mustnt": "mustn't", "neednt": "needn't", "im": "I'm", "ive": "I've", "youre": "you're", "youve": "you've",
    "youll": "you'll", "theyre": "they're", "theyve": "they've", "theyll": "they'll", "weve": "we've",
    "thats": "that's", "whats": "what's", "theres": "there's", "heres": "here's", "wheres": "where's",
    "hes": "he's", "shes": "she's", "itll": "it'll", "couldve": "could've", "wouldve": "would've",
    "shouldve": "should've", "lets go": "let's go",
}
_CONTRACTION = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _CONTRACTIONS), key=len, reverse=True)) + r")\b",
                          re.I)


def fix_contractions(text: str) -> str:
    """"dont" -> "don't", keeping the case of the first letter (and all capitals)."""
    def fix(m: re.Match) -> str:
        word, fixed = m.group(1), _CONTRACTIONS[m.group(1).lower()]
        if word.isupper() and len(word) > 1:
            return fixed.upper()
        return fixed[0].upper() + fixed[1:] if word[0].isupper() else fixed
    return _CONTRACTION.sub(fix, text)


def _words(n: str | int, to: str = "cardinal") -> str:
    return num2words(int(str(n).replace(",", "")), to=to, lang="en").replace("-", " ").replace(",", "")


def _money(m: re.Match) -> str:
    sym, whole, frac, scale = m.group(1), m.group(2), m.group(3), m.group(4)
    one, many, sub_one, sub_many = _CURRENCY[sym]
    if scale:
        amount = f"{_words(whole)} point {' '.join(_words(d) for d in frac)}" if frac else _words(whole)
        return f"{amount} {scale} {many}"
    units = int(whole.replace(",", ""))
    text = f"{_words(units)} {one if units == 1 else many}"
    if frac:
        cents = int(frac.ljust(2, "0"))
        if cents:
            text += f" and {_words(cents)} {sub_one if cents == 1 else sub_many}"
    return text


def _time(m: re.Match) -> str:
    if m.group(1) is not None:
        hour, minute, ampm = int(m.group(1)), int(m.group(2)), m.group(3).lower()
        suffix = " AM" if ampm == "a" else " PM"  # espeak says "P M"; scoring normalisers read "pm"
    else:
        hour, minute, suffix = int(m.group(4)), int(m.group(5)), ""
    minutes = "" if minute == 0 and suffix else (" o'clock" if minute == 0 else
                                                  f" oh {_words(minute)}" if minute < 10 else f" {_words(minute)}")
    return f"{_words(hour)}{minutes}{suffix}"


def _decimal(m: re.Match) -> str:
    return f"{_words(m.group(1))} point {' '.join(_words(d) for d in m.group(2))}"


def _year(m: re.Match) -> str:
    spoken = _words(m.group(1), "year")
    if m.group(0).endswith("s"):  # decades: 1990s -> nineteen nineties
        spoken = spoken[:-1] + "ies" if spoken.endswith("y") else spoken + "s"
    return spoken


def _unit(m: re.Match) -> str:
    value, unit = m.group(1), m.group(2)
    number = _decimal(re.match(r"(\d+)\.(\d+)", value)) if "." in value else _words(value)
    name = _UNITS[unit.lower()] if unit.lower() in _UNITS else _UNITS[unit]
    if value == "1":
        name = name[:-1] if name.endswith("s") and name != "hours" else name.replace("hours", "hour")
    return f"{number} {name}"


def strip_emoji(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c) not in ("So", "Cs", "Co")
                   and not 0xFE00 <= ord(c) <= 0xFE0F and ord(c) != 0x200D)


def strip_markup(text: str) -> str:
    """Remove what cannot be spoken: code, markdown syntax, URLs, e-mail addresses, placeholders, emoji."""
    text = _MD_CODE_BLOCK.sub(" ", text)
    text = _MD_IMAGE.sub(" ", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_INLINE.sub(r"\1", text)
    text = _URL.sub(" ", text)
    text = _EMAIL.sub(" ", text)
    text = _PLACEHOLDER.sub(" ", text)
    text = _MD_LINE_PREFIX.sub("", text)
    # a list item or heading ends a sentence even without a full stop
    text = " ".join(line.strip() + ("" if line.strip()[-1:] in ".!?,;:" else ".")
                    for line in text.splitlines() if line.strip())
    for _ in range(2):  # nested emphasis like ***bold italic***
        text = _MD_EMPHASIS.sub(r"\2", text)
    text = text.replace("*", " ").replace("|", " ")
    return strip_emoji(text)


def normalize_en(text: str) -> str:
    """Written English -> what a speaker says. Idempotent on already-spoken text."""
    text = unicodedata.normalize("NFKC", text)
    text = strip_markup(text).replace("_", " ")  # snake_case and stray underscores: "0_" would hide its digit
    text = text.replace("’", "'").replace("“", '"').replace("”", '"').replace("—", ", ").replace("–", " to ")
    text = fix_contractions(text)
    for abbr, full in _ABBREV.items():
        text = re.sub(rf"(?<!\w){re.escape(abbr)}", full, text)
    text = _MONEY.sub(_money, text)
    text = _PERCENT.sub(lambda m: f"{_decimal(_DECIMAL.match(m.group(1))) if '.' in m.group(1) else _words(m.group(1))} percent", text)
    text = _TIME.sub(_time, text)
    text = _UNIT.sub(_unit, text)
    text = _RANGE.sub(lambda m: f"{m.group(1)} to {m.group(2)}", text)
    text = _ORDINAL.sub(lambda m: _words(m.group(1), "ordinal"), text)
    text = _YEAR.sub(_year, text)
    text = _DECIMAL.sub(_decimal, text)
    text = _NUMBER.sub(lambda m: _words(m.group(0)), text)
    for sym, spoken in _SYMBOLS.items():
        text = text.replace(sym, spoken)
    text = re.sub(r"[\"()\[\]{}<>_~^\\]", " ", text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    text = re.sub(r"(^|\s)[-–—:;,]+(?=\s|$)", " ", text)  # dashes and punctuation left stranded by removals
    text = re.sub(r"([,.!?;:])\1+", r"\1", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = text.strip(" ,;:")
    # a turn ends with a mark: strip_markup gives a line one, and the rules above may have eaten it ("e.g.")
    return text + "." if text and text[-1] not in ".!?" else text
