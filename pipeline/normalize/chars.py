"""Characters that have no place in text to be spoken and shown: found, named, and the harmless ones removed.

LLM output (and a text cache from another folder) is untrusted. Invisible characters with no sound - zero-width
spaces and joiners, the byte-order mark, word joiners, soft hyphens - are removed: the words stay the same.
What is left that is a control character (C0 other than whitespace, DEL, C1 such as U+009B), a bidirectional
embedding, override, isolate or mark (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C; U+202E reverses
the text shown in a browser), any other format character, a private-use or a lone surrogate code point is
named by `hostile_character`, and the turn is rejected with a reason: such text would reach `spoken_text`,
the samples and report.html otherwise.
"""

from __future__ import annotations

import unicodedata

INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"
_REMOVE = dict.fromkeys(map(ord, INVISIBLE), None)
_HOSTILE_CATEGORIES = {"Cc", "Cf", "Co", "Cs"}
_WHITESPACE_CONTROLS = set("\t\n\r")


def strip_invisible(text: str) -> str:
    """`text` without zero-width and other soundless invisible characters."""
    return text.translate(_REMOVE)


def hostile_character(text: str) -> str | None:
    """The first control/bidi/format/private-use/surrogate character of `text`, named (`U+202E RIGHT-TO-LEFT
    OVERRIDE`), or None. Tabs and newlines are whitespace, not hostile."""
    for ch in text:
        if unicodedata.category(ch) in _HOSTILE_CATEGORIES and ch not in _WHITESPACE_CONTROLS:
            return f"U+{ord(ch):04X} {unicodedata.name(ch, 'control character')}"
    return None
