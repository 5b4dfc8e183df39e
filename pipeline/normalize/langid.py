"""Language identification of generated text (py3langid: langid.py's model, shipped inside the package)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str) -> tuple[str, float]:
    """Most likely ISO 639-1 language of `text` and its probability."""
    lang, prob = _identifier().classify(text)
    return str(lang), float(prob)


def wrong_language(turns: list[str], expected: str, min_turn_chars: int = 25,
                   turn_confidence: float = 0.9) -> str | None:
    """Why these turns are not in `expected`, or None. The whole conversation must read as `expected`;
    a single long turn confidently in another language also fails (short turns are too noisy to judge)."""
    whole, prob = detect(" ".join(turns))
    if whole != expected:
        return f"conversation reads as {whole!r} (p={prob:.2f}), expected {expected!r}"
    for i, text in enumerate(turns):
        if len(text) >= min_turn_chars:
            lang, prob = detect(text)
            if lang != expected and prob >= turn_confidence:
                return f"turn {i} reads as {lang!r} (p={prob:.2f}), expected {expected!r}: {text[:80]!r}"
    return None
